// Draws every <div class="chart" data-spec-url="..."> with Vega-Lite, and redraws it when
// htmx swaps new content in. The specs come from the server; nothing is loaded from a CDN.
(function () {
  "use strict";
  function draw(el) {
    var url = el.getAttribute("data-spec-url");
    if (!url || typeof vegaEmbed === "undefined") { return; }
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
      .then(function (spec) {
        return vegaEmbed(el, spec, { actions: false, renderer: "svg" }).then(function () {
          el.setAttribute("data-drawn", "true");
        });
      })
      .catch(function (err) { el.textContent = "Chart unavailable (" + err.message + ")."; });
  }
  function drawAll(root) {
    (root || document).querySelectorAll(".chart[data-spec-url]").forEach(draw);
  }
  window.addEventListener("load", function () { drawAll(document); });
  // <form data-confirm="question">: asks before sending (no inline handlers: the CSP forbids them).
  document.addEventListener("submit", function (e) {
    var question = e.target.getAttribute && e.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { e.preventDefault(); }
  });
  document.addEventListener("htmx:afterSwap", function (e) { drawAll(e.target); });
})();
