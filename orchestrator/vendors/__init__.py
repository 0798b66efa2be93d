"""One module per vendor API, each a ``VendorAdapter`` (see ``orchestrator.provider``): its client,
its request and response mapping, its key. models.yaml ``kinds:`` names which adapter serves which
``<kind>:<id>``; a module here is imported only when one of its models is used."""
