"""Email channel for CX Hub."""
