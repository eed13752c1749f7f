/* Tierline segments page: what its four tabs share — the tabs themselves, the saved
   filters and groups every tab offers, the workflow's tiers and states, a client table
   with checkboxes, keyset pagers and form errors. Each tab lives in its own
   segments_*.js and registers itself here; text only through textContent (Tierline.el). */
"use strict";

window.TierlineSegments = (function () {
  const T = window.Tierline;
  const t = T.t, el = T.el, clear = T.clear, api = T.api;
  const TABS = ["filters", "groups", "campaigns", "economics"];

  const S = {
    workflow: { tiers: [], states: [] },  // from /api/workflows/current
    filters: [],                          // /api/filters
    groups: [],                           // /api/groups
    parts: [],                            // the tabs' start() functions
  };
  const listeners = {};

  function $(id) { return document.getElementById(id); }

  /* A tiny event bus: "filters" and "groups" when their lists change, "open-group". */
  function on(name, fn) { (listeners[name] = listeners[name] || []).push(fn); }
  function emit(name, value) { (listeners[name] || []).forEach(function (fn) { fn(value); }); }

  async function loadFilters() {
    S.filters = (await api("GET", "/api/filters")).filters;
    emit("filters");
  }

  async function loadGroups() {
    S.groups = (await api("GET", "/api/groups")).groups;
    emit("groups");
  }

  async function loadWorkflow() {
    const current = await api("GET", "/api/workflows/current");
    S.workflow = { tiers: current.tiers, states: current.states };
    // Tables filled before the workflow came (the first preview) get their titles now.
    document.querySelectorAll("td.client-state").forEach(function (cell) {
      cell.textContent = stateName(cell.title);
    });
    emit("workflow");
  }

  /* ---- tabs --------------------------------------------------------------------------- */

  let switchTab = null;  // set once the page is ready (Tierline.tabs)

  function goTab(name) {
    if (switchTab) switchTab(name);
  }

  /* ---- shared pieces ------------------------------------------------------------------ */

  /* One client as a table row; with a checkbox when ``selectable`` (its value is the id). */
  function clientRow(client, selectable, onToggle) {
    const box = selectable ? el("input", {
      type: "checkbox", class: "pick", value: client.id, "data-client-id": client.id,
      "aria-label": t("Select {name}", { name: client.name }),
      onchange: onToggle || null,
    }) : null;
    return el("tr", { class: "client-row", "data-client-id": client.id },
      selectable ? el("td", { class: "pick-cell" }, box) : null,
      el("td", { class: "client-name" }, client.name),
      el("td", {}, client.company || ""),
      el("td", {}, el("span", { class: "badge tier-" + client.tier }, client.tier)),
      el("td", { class: "client-state", title: client.state }, stateName(client.state)));
  }

  /* A state as the console names it ("New lead"); the workflow's own name in the tooltip. */
  function stateName(name) {
    const state = S.workflow.states.find(function (s) { return s.name === name; });
    return state && state.title ? state.title : name;
  }

  function checkedIds(tbody) {
    return Array.from(tbody.querySelectorAll("input.pick:checked")).map(function (box) {
      return Number(box.value);
    });
  }

  /* "Select all on page" for one table; ``changed`` runs after any box changes. */
  function bindSelectAll(allBox, tbody, changed) {
    allBox.addEventListener("change", function () {
      tbody.querySelectorAll("input.pick").forEach(function (box) { box.checked = allBox.checked; });
      changed();
    });
    tbody.addEventListener("change", function (ev) {
      if (ev.target !== allBox && ev.target.classList.contains("pick")) {
        const boxes = tbody.querySelectorAll("input.pick");
        allBox.checked = boxes.length > 0 && checkedIds(tbody).length === boxes.length;
        changed();
      }
    });
  }

  /* Keyset pages (``after_id``): a stack of where each shown page started. */
  function pager(prevButton, nextButton, load) {
    const p = { stack: [0], next: null };
    p.reset = function () { p.stack = [0]; p.next = null; };
    p.after = function () { return p.stack[p.stack.length - 1]; };
    p.update = function (nextAfter) {
      p.next = nextAfter === undefined ? null : nextAfter;
      prevButton.hidden = p.stack.length < 2;
      nextButton.hidden = p.next === null;
    };
    prevButton.addEventListener("click", function () {
      if (p.stack.length > 1) p.stack.pop();
      load();
    });
    nextButton.addEventListener("click", function () {
      if (p.next !== null) p.stack.push(p.next);
      load();
    });
    return p;
  }

  /* The server's message next to the form; a lost session still goes to the sign-in page. */
  function formError(node, err) {
    if (err && err.status === 401) {
      T.showError(err);
      return;
    }
    node.textContent = (err && err.message) || String(err);
    node.hidden = false;
  }

  function clearError(node) {
    node.textContent = "";
    node.hidden = true;
  }

  /* A button that asks for a second click before doing something that cannot be undone. */
  function confirmButton(button, action) {
    let armed = null;
    const label = button.textContent;
    button.addEventListener("click", function () {
      if (armed === null) {
        button.textContent = t("Click again to confirm");
        button.dataset.armed = "true";
        armed = setTimeout(function () { disarm(); }, 4000);
        return;
      }
      disarm();
      action();
    });
    function disarm() {
      clearTimeout(armed);
      armed = null;
      button.textContent = label;
      delete button.dataset.armed;
    }
  }

  function stateTitle(name) {
    const state = S.workflow.states.find(function (s) { return s.name === name; });
    return state ? state.title + " (" + name + ")" : name;
  }

  function percent(value, digits) {
    if (value === null || value === undefined) return "—";
    return formatNumber(value * 100, digits === undefined ? 1 : digits) + " %";
  }

  function formatNumber(value, digits, signed) {
    if (value === null || value === undefined) return "—";
    return new Intl.NumberFormat(document.documentElement.lang || undefined, {
      minimumFractionDigits: digits || 0, maximumFractionDigits: digits || 0,
      signDisplay: signed ? "exceptZero" : "auto",
    }).format(value);
  }

  function isoDay(date) {
    const pad = function (n) { return String(n).padStart(2, "0"); };
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate());
  }

  /* ---- start -------------------------------------------------------------------------- */

  document.addEventListener("DOMContentLoaded", async function () {
    switchTab = T.tabs(TABS);
    S.parts.forEach(function (start) { start(); });
    try {
      await Promise.all([loadWorkflow(), loadFilters(), loadGroups()]);
    } catch (err) {
      T.showError(err);
    }
    document.body.dataset.ready = "true";
  });

  Object.assign(S, {
    $: $, on: on, emit: emit, loadFilters: loadFilters, loadGroups: loadGroups,
    goTab: goTab, clientRow: clientRow, checkedIds: checkedIds, bindSelectAll: bindSelectAll,
    pager: pager, formError: formError, clearError: clearError, confirmButton: confirmButton,
    stateTitle: stateTitle, percent: percent, formatNumber: formatNumber, isoDay: isoDay,
  });
  return S;
})();
