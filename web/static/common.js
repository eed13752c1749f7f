/* Tierline: what every page shares — translated strings, safe DOM building, the JSON API
   wrapper (CSRF header, JSON errors shown to the user), and the flash message.
   Data is only ever put on the page with textContent: never innerHTML. */
"use strict";

window.Tierline = (function () {
  const pageData = (function () {
    const node = document.getElementById("page-data");
    try {
      return node ? JSON.parse(node.textContent) : {};
    } catch (e) {
      return {};
    }
  })();
  const strings = pageData.strings || {};

  /* t("Hello, {name}", {name: "Ann"}): the translated text with its parameters. */
  function t(key, params) {
    let text = Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : key;
    if (params) {
      text = text.replace(/\{(\w+)\}/g, function (m, name) {
        return Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : m;
      });
    }
    return text;
  }

  /* A count in words: tn(1, "{n} client", "{n} clients") is "1 client", with 2 "2 clients".
     Both forms are catalogue keys; ``params`` fill the rest. */
  function tn(n, one, many, params) {
    return t(Number(n) === 1 ? one : many, Object.assign({ n: n }, params));
  }

  /* el("button", {class: "x", onclick: fn, dataset: {id: 1}}, "text", childNode, ...) */
  function el(tag, attrs) {
    const node = document.createElement(tag);
    const props = attrs || {};
    for (const name of Object.keys(props)) {
      const value = props[name];
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on") && typeof value === "function") {
        node.addEventListener(name.slice(2), value);
      } else if (name === "text") node.textContent = String(value);
      else if (value === true) node.setAttribute(name, "");
      else node.setAttribute(name, String(value));
    }
    for (let i = 2; i < arguments.length; i++) append(node, arguments[i]);
    return node;
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) {
      child.forEach(function (c) { append(node, c); });
    } else if (child instanceof Node) {
      node.appendChild(child);
    } else {
      node.appendChild(document.createTextNode(String(child)));
    }
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  class ApiError extends Error {
    constructor(status, body) {
      const message = (body && body.message) || t("Something went wrong") + " (HTTP " + status + ")";
      super(message);
      this.status = status;
      this.body = body || {};
    }
  }

  /* api("POST", "/api/x", {..}) -> parsed JSON; throws ApiError with the server's message. */
  async function api(method, url, body) {
    const headers = { "Accept": "application/json" };
    const options = { method: method, headers: headers, credentials: "same-origin" };
    if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken();
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (e) {
      throw new ApiError(0, { error: "NetworkError", message: t("Offline — reconnecting…") });
    }
    let data = null;
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = { message: text.slice(0, 300) };
      }
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  let flashTimer = null;

  /* Show a message to the user; kind: "error" | "info" | "warn". Errors stay until closed. */
  function flash(message, kind) {
    const box = document.getElementById("flash");
    const text = document.getElementById("flash-text");
    if (!box || !text) return;
    text.textContent = message;
    box.className = "flash flash-" + (kind || "info");
    box.dataset.kind = kind || "info";
    box.hidden = false;
    if (flashTimer) clearTimeout(flashTimer);
    if (kind !== "error") flashTimer = setTimeout(function () { box.hidden = true; }, 8000);
  }

  function showError(err) {
    if (err instanceof ApiError && err.status === 401) {
      flash(t("Sign in again") + ": " + err.message, "error");
      setTimeout(function () { window.location.href = "/login?next=" +
        encodeURIComponent(window.location.pathname); }, 1500);
      return;
    }
    const status = err && err.status ? " [" + err.status + "]" : "";
    flash(((err && err.message) || String(err)) + status, "error");
  }

  document.addEventListener("DOMContentLoaded", function () {
    const close = document.getElementById("flash-close");
    if (close) close.addEventListener("click", function () {
      document.getElementById("flash").hidden = true;
    });
  });

  /* The browser's own locale when it speaks the page's language (en-GB: "3 Dec", en-US:
     "Dec 3"), else the page's language. */
  const locale = (function () {
    const lang = pageData.lang || "";
    const own = navigator.language || "";
    return !lang || own.toLowerCase().startsWith(lang.toLowerCase()) ? own || undefined : lang;
  })();

  /* Dates from the API are ISO strings; shown in the operator's zone, 24-hour like the
     server's "Thu 3 Dec 16:42 client time", with the year only when it is not this one. */
  function formatTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    const options = { weekday: "short", day: "numeric", month: "short",
      hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
    if (d.getFullYear() !== new Date().getFullYear()) options.year = "numeric";
    return d.toLocaleString(locale, options);
  }

  /* A moment of the last days as people say it: "today 14:05", "yesterday 18:40", else as
     formatTime writes it (days as the operator's own calendar counts them). */
  function formatRecent(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    const midnight = function (x) { return new Date(x.getFullYear(), x.getMonth(), x.getDate()); };
    const days = Math.round((midnight(new Date()) - midnight(d)) / 86400000);
    if (days === 0) return t("today {time}", { time: clockTime(iso) });
    if (days === 1) return t("yesterday {time}", { time: clockTime(iso) });
    return formatTime(iso);
  }

  /* Wall-clock times in another time zone (the client's), with the browser's own Intl data. */
  function zoneOffsetMs(utcMs, tz) {
    const parts = {};
    new Intl.DateTimeFormat("en-US", {
      timeZone: tz, hourCycle: "h23", year: "numeric", month: "numeric", day: "numeric",
      hour: "numeric", minute: "numeric", second: "numeric",
    }).formatToParts(new Date(utcMs)).forEach(function (p) { parts[p.type] = Number(p.value); });
    const wall = Date.UTC(parts.year, parts.month - 1, parts.day, parts.hour, parts.minute, parts.second);
    return wall - Math.floor(utcMs / 1000) * 1000;
  }

  /* "2026-12-04T15:00" (a datetime-local input) read as a time in zone tz -> ISO 8601 UTC. */
  function zonedToIso(local, tz) {
    const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(local || "");
    if (!m) return null;
    const wall = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5]);
    let utc = wall - zoneOffsetMs(wall, tz);
    utc = wall - zoneOffsetMs(utc, tz); // across a daylight-saving change the first guess is off
    return new Date(utc).toISOString();
  }

  /* The wall-clock time of an ISO moment, e.g. "17:42": 24-hour, as the server's "15:00 client
     time" and formatTime's dates; in zone tz, or the operator's own when tz is not given. */
  function clockTime(iso, tz) {
    if (!iso) return "";
    const d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    return d.toLocaleTimeString(locale, {
      timeZone: tz, hour: "2-digit", minute: "2-digit", hourCycle: "h23",
    });
  }

  /* The time now in zone tz. */
  function timeIn(tz) {
    return clockTime(new Date().toISOString(), tz);
  }

  /* Tabs of a staff page: button #tab-btn-NAME shows panel #tab-NAME, the first is the default,
     and the URL's #NAME keeps the choice across reloads. Returns go(name) for code to switch. */
  function tabs(names) {
    function show(name) {
      if (names.indexOf(name) < 0) name = names[0];
      names.forEach(function (tab) {
        document.getElementById("tab-" + tab).hidden = tab !== name;
        const button = document.getElementById("tab-btn-" + tab);
        button.setAttribute("aria-selected", tab === name ? "true" : "false");
        button.classList.toggle("is-active", tab === name);
      });
      document.body.dataset.tab = name;
    }
    function go(name) {
      history.replaceState(null, "", "#" + name);
      show(name);
    }
    names.forEach(function (tab) {
      document.getElementById("tab-btn-" + tab).addEventListener("click", function () { go(tab); });
    });
    show(window.location.hash.slice(1));
    return go;
  }

  return {
    t: t, tn: tn, el: el, clear: clear, api: api, ApiError: ApiError, flash: flash, tabs: tabs,
    showError: showError, formatTime: formatTime, formatRecent: formatRecent,
    zonedToIso: zonedToIso, timeIn: timeIn,
    clockTime: clockTime,
    csrfToken: csrfToken,
    user: pageData.user || null,
  };
})();
