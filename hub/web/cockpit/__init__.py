"""The admin cockpit: the pages a CX manager or CRM admin opens in a browser under ``/admin``.

One module per page, each with its own router: ``dashboard`` (the NPS and its trend, comments, CSV),
``sync`` (per connector: state, history, actions), ``people`` (search, one person's story, privacy),
``campaigns`` (campaigns and channels), ``users`` (who may enter, and the audit log). What they share:
``access`` (who is signed in and in which role, CSRF on every form, the audit log), ``render`` (one way
to render a page) and ``i18n`` (the cockpit's texts in the survey pages' languages).
"""
