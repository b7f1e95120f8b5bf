"""A fake CRM service and the test connector and channel that talk to it over real HTTP.

They prove the core's flow without any real CRM: the plugin (``tests.fakes.plugin``) loads through the
real plugin manager (``hub.plugin_modules``), and the service (``tests.fakes.crm``) runs under uvicorn.
"""
