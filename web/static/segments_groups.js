/* Tierline segments page, Groups tab: static groups with their sizes; a group's members
   with checkboxes and one-click removal; clients picked from a search or a saved filter
   and added in one click. */
"use strict";

(function () {
  const T = window.Tierline;
  const t = T.t, el = T.el, clear = T.clear, api = T.api;
  const S = window.TierlineSegments;
  const $ = S.$;
  const PAGE = 50;

  const state = { current: null, members: null, picked: null };

  function renderList() {
    const list = clear($("group-list"));
    $("group-list-empty").hidden = S.groups.length > 0;
    S.groups.forEach(function (g) {
      list.appendChild(el("li", { class: state.current === g.id ? "is-active" : "" },
        el("button", {
          type: "button", class: "link seg-item", "data-group-id": g.id, "data-testid": "group-item",
          onclick: function () { openGroup(g.id); },
        }, g.name),
        el("span", { class: "badge", "data-testid": "group-item-size" }, String(g.size))));
    });
  }

  function fillFilterSelects() {
    [["group-source", t("empty — add clients by hand")], ["picker-filter", t("choose…")]]
      .forEach(function (pair) {
        const select = $(pair[0]);
        const keep = select.value;
        clear(select).appendChild(el("option", { value: "" }, pair[1]));
        S.filters.forEach(function (f) { select.appendChild(el("option", { value: f.id }, f.name)); });
        select.value = keep;
      });
  }

  async function createGroup(ev) {
    ev.preventDefault();
    const error = $("group-error");
    S.clearError(error);
    const body = { name: $("group-name").value.trim() };
    if ($("group-source").value) body.filter_id = Number($("group-source").value);
    try {
      const group = await api("POST", "/api/groups", body);
      $("group-form").reset();
      T.flash(T.tn(group.size, "Group {name} created with {n} client.", "Group {name} created with {n} clients.", { name: group.name }), "info");
      await S.loadGroups();
      await openGroup(group.id);
    } catch (err) {
      S.formError(error, err);
    }
  }

  async function openGroup(id) {
    let group;
    try {
      group = await api("GET", "/api/groups/" + encodeURIComponent(id));
    } catch (err) {
      T.showError(err);
      return;
    }
    const changedGroup = state.current !== group.id;
    state.current = group.id;
    $("group-none").hidden = true;
    $("group-detail").hidden = false;
    $("picker").hidden = false;
    $("group-detail").dataset.groupId = String(group.id);
    $("group-title").textContent = group.name;
    showSize(group.size);
    const source = S.filters.find(function (f) { return f.id === group.source_filter_id; });
    $("group-origin").textContent = source
      ? t("Made from the filter {name} on {time}.", { name: source.name, time: T.formatTime(group.created_at) })
      : t("Created on {time}.", { time: T.formatTime(group.created_at) });
    renderList();
    if (changedGroup) {
      state.members.reset();
      clear($("picker-body"));
      $("picker-all").checked = false;
      pickedChanged();
    }
    await loadMembers();
  }

  function showSize(size) {
    const node = $("group-size");
    node.textContent = T.tn(size, "{n} member", "{n} members");
    node.dataset.size = String(size);
  }

  async function refreshGroup() {
    const [group] = await Promise.all([
      api("GET", "/api/groups/" + state.current), S.loadGroups(),
    ]);
    showSize(group.size);
  }

  async function loadMembers() {
    if (state.current === null) return;
    let page;
    try {
      page = await api("GET", "/api/groups/" + state.current + "/members?limit=" + PAGE +
        "&after_id=" + state.members.after());
    } catch (err) {
      T.showError(err);
      return;
    }
    const body = clear($("members-body"));
    page.clients.forEach(function (c) { body.appendChild(S.clientRow(c, true)); });
    $("members-all").checked = false;
    $("members-empty").hidden = page.clients.length > 0;
    state.members.update(page.next_after);
    membersChanged();
  }

  function membersChanged() {
    const n = S.checkedIds($("members-body")).length;
    $("members-remove").disabled = n === 0;
    $("members-remove").textContent = n ? t("Remove selected ({n})", { n: n }) : t("Remove selected");
  }

  async function removeSelected() {
    const ids = S.checkedIds($("members-body"));
    if (!ids.length) return;
    const button = $("members-remove");
    button.disabled = true;
    try {
      const answer = await api("POST", "/api/groups/" + state.current + "/members/remove",
        { client_ids: ids });
      T.flash(T.tn(answer.removed, "Removed {n} client from the group.", "Removed {n} clients from the group."), "info");
      await refreshGroup();
    } catch (err) {
      T.showError(err);
    }
    await loadMembers();
  }

  /* ---- picking clients to add ------------------------------------------------------- */

  async function search(ev) {
    ev.preventDefault();
    const q = $("picker-q").value.trim();
    if (!q) return;
    $("picker-filter").value = "";
    await showPicked("/api/clients?limit=100&q=" + encodeURIComponent(q));
  }

  async function fromFilter() {
    const id = $("picker-filter").value;
    if (!id) return;
    $("picker-q").value = "";
    await showPicked("/api/filters/" + encodeURIComponent(id) + "/clients?limit=100");
  }

  async function showPicked(url) {
    let answer;
    try {
      answer = await api("GET", url);
    } catch (err) {
      T.showError(err);
      return;
    }
    const body = clear($("picker-body"));
    answer.clients.forEach(function (c) { body.appendChild(S.clientRow(c, true)); });
    $("picker-all").checked = false;
    $("picker-empty").hidden = answer.clients.length > 0;
    pickedChanged();
  }

  function pickedChanged() {
    const n = S.checkedIds($("picker-body")).length;
    $("picker-add").disabled = n === 0;
    $("picker-add").textContent = n ? t("Add selected to group ({n})", { n: n })
      : t("Add selected to group");
  }

  async function addSelected() {
    const ids = S.checkedIds($("picker-body"));
    if (!ids.length || state.current === null) return;
    const button = $("picker-add");
    button.disabled = true;
    try {
      const answer = await api("POST", "/api/groups/" + state.current + "/members",
        { client_ids: ids });
      T.flash(T.tn(answer.added, "Added {n} client to the group.", "Added {n} clients to the group."), "info");
      $("picker-body").querySelectorAll("input.pick").forEach(function (box) { box.checked = false; });
      $("picker-all").checked = false;
      await refreshGroup();
      await loadMembers();
    } catch (err) {
      T.showError(err);
    }
    pickedChanged();
  }

  async function deleteGroup() {
    try {
      await api("DELETE", "/api/groups/" + state.current);
      T.flash(t("Group deleted."), "info");
    } catch (err) {
      T.showError(err);
      return;
    }
    state.current = null;
    $("group-detail").hidden = true;
    $("picker").hidden = true;
    $("group-none").hidden = false;
    await S.loadGroups();
  }

  S.parts.push(function start() {
    state.members = S.pager($("members-prev"), $("members-next"), loadMembers);
    S.bindSelectAll($("members-all"), $("members-body"), membersChanged);
    S.bindSelectAll($("picker-all"), $("picker-body"), pickedChanged);
    $("group-form").addEventListener("submit", createGroup);
    $("members-remove").addEventListener("click", removeSelected);
    $("picker-form").addEventListener("submit", search);
    $("picker-filter").addEventListener("change", fromFilter);
    $("picker-add").addEventListener("click", addSelected);
    S.confirmButton($("group-delete"), deleteGroup);
    S.on("groups", renderList);
    S.on("filters", fillFilterSelects);
    S.on("open-group", openGroup);
  });
})();
