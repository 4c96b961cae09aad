"""The server-rendered web page for responders and approvers, mounted at ``/ui``."""
