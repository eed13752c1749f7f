/* Tierline segments page, Filters tab: the saved filters, the criteria editor, and the
   count and first page of matching clients, refreshed as the filter is edited (debounced;
   an answer to an older edit is dropped). */
"use strict";

(function () {
  const T = window.Tierline;
  const t = T.t, el = T.el, clear = T.clear, api = T.api;
  const S = window.TierlineSegments;
  const $ = S.$;
  const PREVIEW_DELAY_MS = 300;
  const PAGE = 20;

  const state = {
    current: null,    // the saved filter being edited (its id), or null for a new one
    editor: null,
    seq: 0,           // drops preview answers to criteria that have since changed
    timer: null,
    nextAfter: null,
  };

  function renderList() {
    const list = clear($("filter-list"));
    $("filter-list-empty").hidden = S.filters.length > 0;
    S.filters.forEach(function (f) {
      list.appendChild(el("li", { class: state.current === f.id ? "is-active" : "" },
        el("button", {
          type: "button", class: "link seg-item", "data-filter-id": f.id,
          "data-testid": "filter-item", onclick: function () { openFilter(f.id); },
        }, f.name)));
    });
  }

  function changed() {
    clearTimeout(state.timer);
    $("preview-count").dataset.state = "busy";
    state.timer = setTimeout(function () { preview(false); }, PREVIEW_DELAY_MS);
  }

  function showCriteriaError(err, paths) {
    S.formError($("filter-error"), err);
    const body = (err && err.body) || {};
    state.editor.markError(paths, body.field === "criteria" ? body.node : null);
  }

  async function preview(more) {
    clearTimeout(state.timer);
    const count = $("preview-count");
    const ser = state.editor.serialize();
    state.editor.markIncomplete(ser.incomplete);
    const seq = ++state.seq;
    if (ser.incomplete.length) {
      count.textContent = t("Complete the highlighted conditions to see the count.");
      count.dataset.state = "incomplete";
      return;
    }
    const body = { criteria: ser.criteria, limit: PAGE };
    if (more) body.after_id = state.nextAfter;
    let answer;
    try {
      answer = await api("POST", "/api/filters/preview", body);
    } catch (err) {
      if (seq !== state.seq) return dropped();
      count.textContent = "";
      count.dataset.state = "error";
      showCriteriaError(err, ser.paths);
      return;
    }
    if (seq !== state.seq) return dropped();  // the filter changed while we waited
    S.clearError($("filter-error"));
    state.editor.markError({}, null);
    count.textContent = T.tn(answer.count, "{n} client matches", "{n} clients match");
    count.dataset.count = String(answer.count);
    count.dataset.state = "done";
    const rows = $("preview-body");
    if (!more) clear(rows);
    answer.first_page.forEach(function (c) { rows.appendChild(S.clientRow(c, false)); });
    state.nextAfter = answer.next_after;
    $("preview-more").hidden = answer.next_after === null;
  }

  /* Counted on the page, so a test can see that a late answer arrived and was ignored. */
  function dropped() {
    const count = $("preview-count");
    count.dataset.dropped = String(Number(count.dataset.dropped || 0) + 1);
  }

  function startNew() {
    state.current = null;
    $("filter-name").value = "";
    $("filter-description").value = "";
    $("filter-delete").hidden = true;
    $("filter-form").dataset.filterId = "";
    S.clearError($("filter-error"));
    state.editor.load({ all: [] });
    renderList();
    preview(false);
  }

  async function openFilter(id) {
    let row;
    try {
      row = await api("GET", "/api/filters/" + encodeURIComponent(id));
    } catch (err) {
      T.showError(err);
      return;
    }
    state.current = row.id;
    $("filter-name").value = row.name;
    $("filter-description").value = row.description || "";
    $("filter-delete").hidden = false;
    $("filter-form").dataset.filterId = String(row.id);
    S.clearError($("filter-error"));
    state.editor.load(row.criteria);
    renderList();
    await preview(false);
  }

  function formBody() {
    const ser = state.editor.serialize();
    state.editor.markIncomplete(ser.incomplete);
    if (ser.incomplete.length) {
      S.formError($("filter-error"), new Error(t("Complete the highlighted conditions first.")));
      return null;
    }
    return {
      ser: ser,
      body: {
        name: $("filter-name").value.trim(),
        description: $("filter-description").value.trim(),
        criteria: ser.criteria,
      },
    };
  }

  async function save(ev) {
    ev.preventDefault();
    const form = formBody();
    if (!form) return;
    S.clearError($("filter-error"));
    const button = $("filter-save");
    button.disabled = true;
    try {
      const row = state.current === null
        ? await api("POST", "/api/filters", form.body)
        : await api("PATCH", "/api/filters/" + state.current, form.body);
      state.current = row.id;
      $("filter-delete").hidden = false;
      $("filter-form").dataset.filterId = String(row.id);
      T.flash(t("Filter saved."), "info");
      await S.loadFilters();
    } catch (err) {
      showCriteriaError(err, form.ser.paths);
    } finally {
      button.disabled = false;
    }
  }

  async function remove() {
    if (state.current === null) return;
    try {
      await api("DELETE", "/api/filters/" + state.current);
      T.flash(t("Filter deleted."), "info");
      await S.loadFilters();
      startNew();
    } catch (err) {
      S.formError($("filter-error"), err);
    }
  }

  /* One click: a group holding exactly the clients the filter matches now. */
  async function toGroup() {
    const form = formBody();
    if (!form) return;
    const base = form.body.name || t("Group");
    const body = { name: (base + " — " + new Date().toLocaleString()).slice(0, 128) };
    if (state.current !== null) body.filter_id = state.current;
    else body.criteria = form.body.criteria;
    const button = $("filter-to-group");
    button.disabled = true;
    try {
      const group = await api("POST", "/api/groups", body);
      T.flash(T.tn(group.size, "Group {name} created with {n} client.", "Group {name} created with {n} clients.", { name: group.name }), "info");
      await S.loadGroups();
      S.goTab("groups");
      S.emit("open-group", group.id);
    } catch (err) {
      showCriteriaError(err, form.ser.paths);
    } finally {
      button.disabled = false;
    }
  }

  S.parts.push(function start() {
    state.editor = window.TierlineCriteria.create($("criteria"), changed);
    $("filter-form").addEventListener("submit", save);
    $("filter-new").addEventListener("click", startNew);
    $("filter-to-group").addEventListener("click", toGroup);
    $("preview-more").addEventListener("click", function () { preview(true); });
    S.confirmButton($("filter-delete"), remove);
    S.on("filters", renderList);
    S.on("workflow", function () { state.editor.render(); });
    preview(false);
  });
})();
