"""SuperOffice connector for CX Hub."""
