"""The prediction service (BentoML) with its schemas, prediction log and request limits.

Importing the package sets BENTOML_HOME from the platform's settings (an operator's own
value is kept) before any module here imports BentoML, which resolves its store from that
variable once; so `api.service` and the rest import in plain order.
"""

from credit_platform.core import settings

settings.export_bentoml_home()
