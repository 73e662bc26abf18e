"""The FaaS host service: config, engine cache, pools, router, listeners, components, CLI."""
