"""The spec itself and a Swagger UI page for it, served from the swagger-ui-bundle package (offline)."""

from __future__ import annotations

from flask import Blueprint, Response, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from service.api.validation import SPEC_PATH

bp = Blueprint("docs", __name__)

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Unitscope API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: "/openapi.yaml",
      dom_id: "#swagger-ui",
      deepLinking: true,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout"
    });
  </script>
</body>
</html>
"""


@bp.get("/openapi.yaml")
def openapi_yaml():
    return Response(SPEC_PATH.read_bytes(), mimetype="application/yaml")


@bp.get("/docs")
def docs_page():
    return Response(_PAGE, mimetype="text/html")


@bp.get("/docs/<path:filename>")
def docs_asset(filename: str):
    return send_from_directory(str(swagger_ui_path), filename, max_age=86400)
