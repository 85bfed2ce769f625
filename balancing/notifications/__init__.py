"""Alerts and reports told to people (email) and to other systems (signed webhooks). Schema: tenant.

``models`` (preferences, endpoints, events, deliveries), ``routing`` (who hears of an event),
``services`` (``notification_emit`` and the writes of the portal pages), ``selectors`` (the
reads of the portal pages), ``webhooks`` (signing, verifying, URL rules, the POST), ``tasks``
(delivery with Celery's retries, queue ``notifications``). Import from the modules, not from
here: the package loads with the models.
"""
