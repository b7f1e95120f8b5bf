"""Parts of the SuperOffice emulator (``hub_superoffice.emulator`` is the public entry point).

``store`` holds the tenant's records and the rules for changing them, ``odata`` the archive queries,
``authority`` the credentials, ``hooks`` webhook registration and delivery, ``views`` the HTML pages.
"""
