"""Parts of the Salesforce emulator: the SOQL subset, the org's records and schema, Outbound Messages."""
