"""What tap-dynamics and target-dynamics share on top of ``dynamics_api``: the connection settings
(declared once), the client and metadata factory, the console entry (with the ``login`` command)
and one-sentence configuration errors. The only package here that knows both singer-sdk and
``dynamics_api``; the plugins import it and never each other."""
