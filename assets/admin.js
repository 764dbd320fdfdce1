// Wharf admin: progressive enhancement only. Pages work without this file.
// Live job progress on the dashboard: poll the JSON the page was rendered from.
(function () {
  "use strict";
  var box = document.getElementById("progress");
  if (!box || !window.fetch) { return; }
  var url = box.getAttribute("data-poll");
  function tick() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) {
        if (!p) { return; }
        box.textContent = p.summary;
        box.setAttribute("data-updated", String(Date.now()));
        var bar = document.getElementById("progress-bar");
        if (p.sync.running) {
          if (!bar) {
            bar = document.createElement("progress");
            bar.id = "progress-bar";
            box.parentNode.insertBefore(bar, box.nextSibling);
          }
          bar.max = Math.max(p.sync.blobs_total, 1);
          bar.value = p.sync.blobs_done;
        } else if (bar) {
          bar.remove();
        }
      })
      .catch(function () {});
  }
  setInterval(tick, 2000);
})();
