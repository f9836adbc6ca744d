"""The Dataverse Web API: reads (queries, paging, annotations, change tracking) and writes
(create, update, upsert, delete, ``$batch``), over the store. Transport-independent: the server
turns HTTP into a ``Request`` and writes back the ``Response``.

One module per concern: ``api`` (``DataService`` and its routing), ``metadata`` (``$metadata``,
``WhoAmI``, ``EntityDefinitions``), ``reads``, ``tracking`` (change tracking), ``payload``
(validation of write bodies), ``writes``, ``batch``, ``functions`` (``RetrieveTotalRecordCount``);
``base`` and ``common`` hold what they share.
"""

from .api import DataService
from .common import Caller, Prefer, Request, ServiceSettings

__all__ = ["Caller", "DataService", "Prefer", "Request", "ServiceSettings"]
