// Starts Swagger UI (served from the swagger-ui-bundle package) on this server's schema.
// A file of its own, not an inline script, so the page's Content-Security-Policy can forbid inline scripts.
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true });
