"""A local Dataverse Web API and Entra ID token service over HTTPS, for development and tests."""
