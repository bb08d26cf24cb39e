// Starts Swagger UI (from swagger-ui-dist, served by the API) on this API's document. A file
// rather than an inline script, so the page's Content-Security-Policy allows only this origin.
window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  // The default would fetch a validity badge from validator.swagger.io.
  validatorUrl: null,
});
