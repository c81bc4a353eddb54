// crisp-relay console: refreshes the overview's figures every 2 s from
// /api/v1/overview. Writes text only (textContent), never HTML. Without
// JavaScript the pages still show everything, as of their loading.
(function () {
  "use strict";
  var table = document.getElementById("targets");
  if (!table) {
    return;
  }
  var CELLS = {
    "kind": "kind",
    "state": "state_text",
    "queue-depth": "queue_depth",
    "oldest-age": "oldest_age",
    "delivered-1h": "delivered_1h",
    "failed-1h": "failed_1h",
    "throttled-1h": "throttled_1h",
    "rate-wait": "rate_wait"
  };

  function setText(el, value) {
    var text = value === null || value === undefined ? "—" : String(value);
    if (el && el.textContent !== text) {
      el.textContent = text;
    }
  }

  function update(data) {
    var rows = table.querySelectorAll("tbody tr[data-target]");
    var byName = {};
    (data.targets || []).forEach(function (t) { byName[t.name] = t; });
    rows.forEach(function (row) {
      var t = byName[row.getAttribute("data-target")];
      if (!t) {
        return;
      }
      Object.keys(CELLS).forEach(function (cls) {
        setText(row.querySelector("td." + cls), t[CELLS[cls]]);
      });
      var state = row.querySelector("td.state");
      if (state) {
        state.setAttribute("data-state", t.state);
      }
    });
    (data.ingest || []).forEach(function (i) {
      document.querySelectorAll("#ingest dd").forEach(function (dd) {
        if (dd.getAttribute("data-ingest") === i.key) {
          setText(dd, i.count);
        }
      });
    });
    if (data.store) {
      setText(document.querySelector('#store dd[data-store="size"]'), data.store.size);
    }
  }

  function poll() {
    fetch("/api/v1/overview", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { update(data); } })
      .catch(function () { /* the relay restarting: try again next time */ })
      .finally(function () { window.setTimeout(poll, 2000); });
  }
  window.setTimeout(poll, 2000);
})();
