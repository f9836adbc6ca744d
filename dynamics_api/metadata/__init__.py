"""Dataverse ``$metadata`` (OData v4 CSDL) and the EntityDefinitions queries, by concern.

Modules:
    model: Property, Lookup, EntityType, EntityModel, MetadataError: the parsed model.
    parser: parse_metadata(source, wanted): bytes, a binary file or a path -> EntityModel, as a
        stream; xmlguard is the one hostile-XML guard it runs first, resolve the inheritance.
    schema: json_schema(entity, properties=...), schema_properties, property_schema: JSON Schema
        for Singer catalogs.
    fetch: fetch_metadata(get, environment_url, wanted, cache, api_version=...): GET
        ``$metadata?annotations=true`` streamed through the parser, with an optional cache.
    cache: MetadataCache: the parsed model on disk (msgspec), one file per environment, a TTL.
    entitydefs: text_lengths, state_options, inactive_state: what CSDL does not carry, read from
        the EntityDefinitions API.
"""

from dynamics_api.metadata.cache import MetadataCache
from dynamics_api.metadata.entitydefs import (
    StateOption,
    inactive_state,
    state_options,
    text_lengths,
)
from dynamics_api.metadata.fetch import fetch_metadata, metadata_url
from dynamics_api.metadata.model import EntityModel, EntityType, Lookup, MetadataError, Property
from dynamics_api.metadata.parser import parse_metadata
from dynamics_api.metadata.schema import json_schema, property_schema, schema_properties

__all__ = [
    "EntityModel",
    "EntityType",
    "Lookup",
    "MetadataCache",
    "MetadataError",
    "Property",
    "StateOption",
    "fetch_metadata",
    "inactive_state",
    "json_schema",
    "metadata_url",
    "parse_metadata",
    "property_schema",
    "schema_properties",
    "state_options",
    "text_lengths",
]
