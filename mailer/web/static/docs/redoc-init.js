// Starts ReDoc on the element that names the OpenAPI document (no inline script).
(function () {
  "use strict";
  var root = document.getElementById("redoc");
  Redoc.init(root.dataset.openapiUrl, { disableSearch: false }, root);
})();
