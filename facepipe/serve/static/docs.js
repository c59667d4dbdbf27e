// Starts Swagger UI 5 (served from the swagger-ui-bundle-v2 package; it reads FastAPI's OpenAPI 3.1) on this
// server's schema. A file of its own, not an inline script, so the page's Content-Security-Policy can forbid inline
// scripts. validatorUrl null: no badge fetched from swagger.io (the page reaches nothing but this server).
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null });
