// Switchboard dashboard: the one script. It only refreshes the parts of a page marked
// data-refresh="URL" (data-interval seconds) by fetching that URL and swapping in the element
// with the same id. Without JavaScript every page is complete; reloading refreshes it.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  var KEY = "switchboard.autoRefresh";

  function enabled() {
    try { return window.localStorage.getItem(KEY) !== "off"; } catch (e) { return true; }
  }

  function refresh(element) {
    if (document.hidden || !enabled()) { return Promise.resolve(true); }
    return fetch(element.getAttribute("data-refresh"), { credentials: "same-origin", redirect: "follow" })
      .then(function (answer) {
        if (!answer.ok || answer.url.indexOf("/login") !== -1) { return false; }  // signed out: stop
        return answer.text().then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(element.id);
          if (!fresh) { return false; }
          if (!element.contains(document.activeElement) || document.activeElement === document.body) {
            element.innerHTML = fresh.innerHTML;
          }
          return true;
        });
      })
      .catch(function () { return true; });   // the daemon restarting: try again later
  }

  function schedule(element) {
    var seconds = parseFloat(element.getAttribute("data-interval") || "5");
    window.setTimeout(function () {
      refresh(element).then(function (again) { if (again) { schedule(element); } });
    }, Math.max(seconds, 1) * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("input.auto-refresh").forEach(function (box) {
      box.checked = enabled();
      box.addEventListener("change", function () {
        try { window.localStorage.setItem(KEY, box.checked ? "on" : "off"); } catch (e) { /* private mode */ }
      });
    });
    document.querySelectorAll("[data-refresh][id]").forEach(schedule);
  });
}());
