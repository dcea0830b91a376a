// mocksync local web page: live updates without reloads, and confirmations. Plain JavaScript,
// loaded from the daemon itself (no CDN, no build step).
//
// The daemon pushes "something changed" on /events (server-sent events); the page then
// fetches its own live part, rendered by the server, and swaps it in. Changes that arrive
// while a fetch runs are coalesced into one more fetch, so a burst costs two renders at most.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var badge = document.getElementById("live-state");
  var busy = false, again = false;

  function mark(text, on) {
    if (!badge) return;
    badge.textContent = text;
    badge.className = "live-state" + (on ? " on" : "");
  }

  function refresh() {
    if (!live) return;
    if (busy) { again = true; return; }
    busy = true;
    fetch(live.dataset.part, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401 || r.status === 403) {
          mark("signed out: run mocksync open", false);
          return null;
        }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html !== null && html !== undefined) {
          live.innerHTML = html;
          live.dataset.updated = String(Date.now());
        }
      })
      .catch(function () { /* the daemon is restarting: the stream reconnects */ })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  if (live && window.EventSource) {
    var first = true;
    var es = new EventSource(live.dataset.events);
    es.addEventListener("hello", function () {
      mark("live", true);
      if (!first) refresh();  // back after a gap: what changed meanwhile
      first = false;
    });
    es.addEventListener("change", refresh);
    es.onerror = function () { mark("reconnecting…", false); };
  } else {
    mark("not live", false);
  }

  document.addEventListener("submit", function (e) {
    var text = e.target && e.target.dataset ? e.target.dataset.confirm : null;
    if (text && !window.confirm(text)) e.preventDefault();
  });
})();
