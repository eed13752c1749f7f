/* Tierline segments page, Campaigns tab: the campaigns and their status, the form that
   creates one (segment, entry state, the tier whose operators will call, dates, control
   share), the launch with its result, and the report: control group, funnel, responses. */
"use strict";

(function () {
  const T = window.Tierline;
  const t = T.t, el = T.el, clear = T.clear, api = T.api;
  const S = window.TierlineSegments;
  const $ = S.$;
  const SKIP_REASONS = {
    do_not_call: "do not call", final_state: "in a final state", other_tier: "working in another tier",
  };

  const state = { campaigns: [], entryStates: [], users: [], current: null };

  function segmentName(c) {
    if (c.filter_id !== null) {
      const f = S.filters.find(function (x) { return x.id === c.filter_id; });
      return t("filter") + " " + (f ? f.name : "#" + c.filter_id);
    }
    const g = S.groups.find(function (x) { return x.id === c.group_id; });
    return t("group") + " " + (g ? g.name : "#" + c.group_id);
  }

  function fillSegments() {
    const select = $("campaign-segment");
    const keep = select.value;
    clear(select).appendChild(el("option", { value: "" }, t("choose…")));
    const filters = el("optgroup", { label: t("Saved filters") });
    S.filters.forEach(function (f) { filters.appendChild(el("option", { value: "filter:" + f.id }, f.name)); });
    const groups = el("optgroup", { label: t("Groups") });
    S.groups.forEach(function (g) {
      groups.appendChild(el("option", { value: "group:" + g.id },
        g.name + " (" + t("{n} members", { n: g.size }) + ")"));
    });
    select.appendChild(filters);
    select.appendChild(groups);
    select.value = keep;
  }

  function fillEntryStates() {
    const select = $("campaign-entry");
    const keep = select.value;
    const mailing = $("campaign-kind").value === "mailing_follow_up";
    clear(select).appendChild(el("option", { value: "" }, t("choose…")));
    const byTier = {};
    state.entryStates.filter(function (s) { return !mailing || s.mailing; }).forEach(function (s) {
      if (!byTier[s.tier]) byTier[s.tier] = select.appendChild(el("optgroup", { label: s.tier }));
      byTier[s.tier].appendChild(el("option", { value: s.name, "data-tier": s.tier },
        s.title + " (" + s.name + ")"));
    });
    select.value = keep;
    showOperators();
  }

  /* Who will make the calls: a campaign's calls go to its entry state's tier. */
  function showOperators() {
    const chosen = state.entryStates.find(function (s) { return s.name === $("campaign-entry").value; });
    const node = $("campaign-operators");
    if (!chosen) {
      node.textContent = t("Choose an entry state to see who will call.");
      return;
    }
    const names = state.users.filter(function (u) {
      return u.role === "operator" && u.active && u.tier === chosen.tier;
    }).map(function (u) { return u.display_name || u.username; });
    node.textContent = names.length
      ? t("Tier {tier}: the calls go to the queues of {names}.", { tier: chosen.tier, names: names.join(", ") })
      : t("Tier {tier} has no active operators: nobody will take these calls.", { tier: chosen.tier });
  }

  async function loadCampaigns() {
    try {
      state.campaigns = (await api("GET", "/api/campaigns")).campaigns;
    } catch (err) {
      T.showError(err);
      return;
    }
    renderList();
  }

  function renderList() {
    const body = clear($("campaigns-body"));
    $("campaigns-empty").hidden = state.campaigns.length > 0;
    state.campaigns.forEach(function (c) {
      const dates = c.starts_on || c.ends_on
        ? [c.starts_on, c.ends_on].map(function (d) { return d || "…"; }).join(" – ") : "—";
      body.appendChild(el("tr", {
        class: "campaign-row" + (state.current === c.id ? " is-active" : ""),
        "data-campaign-id": c.id, "data-status": c.status,
      },
        el("td", {}, el("button", {
          type: "button", class: "link", "data-testid": "campaign-open",
          onclick: function () { openCampaign(c.id); },
        }, c.name)),
        el("td", {}, segmentName(c)),
        el("td", {}, S.stateTitle(c.entry_state), " ", el("span", { class: "badge tier-" + c.tier }, c.tier)),
        el("td", {}, el("span", { class: "badge status-" + c.status, "data-testid": "campaign-status" },
          t(c.status))),
        el("td", { class: "num" }, String(c.arms.called)),
        el("td", { class: "num" }, String(c.arms.control)),
        el("td", {}, S.percent(c.holdout_share, 0)),
        el("td", {}, dates)));
    });
  }

  async function createCampaign(ev) {
    ev.preventDefault();
    const error = $("campaign-error");
    S.clearError(error);
    const segment = $("campaign-segment").value.split(":");
    const share = $("campaign-share").value.trim();
    const body = {
      name: $("campaign-name").value.trim(),
      kind: $("campaign-kind").value,
      entry_state: $("campaign-entry").value,
      holdout_share: share === "" ? 0 : Number(share) / 100,
      starts_on: $("campaign-starts").value || null,
      ends_on: $("campaign-ends").value || null,
      description: $("campaign-description").value.trim(),
    };
    if (segment[0] === "filter") body.filter_id = Number(segment[1]);
    if (segment[0] === "group") body.group_id = Number(segment[1]);
    if (Number.isNaN(body.holdout_share)) {
      S.formError(error, new Error(t("The control share is a number of per cent.")));
      return;
    }
    try {
      const row = await api("POST", "/api/campaigns", body);
      $("campaign-form").reset();
      fillEntryStates();
      T.flash(t("Campaign {name} created.", { name: row.name }), "info");
      await loadCampaigns();
      await openCampaign(row.id);
    } catch (err) {
      S.formError(error, err);
    }
  }

  async function openCampaign(id) {
    const c = state.campaigns.find(function (x) { return x.id === id; });
    if (!c) return;
    state.current = id;
    renderList();
    const detail = $("campaign-detail");
    detail.hidden = false;
    detail.dataset.campaignId = String(id);
    $("campaign-title").textContent = c.name;
    $("campaign-summary").textContent = t("{segment}, entering {state}; {share} held back as the control group.", {
      segment: segmentName(c), state: S.stateTitle(c.entry_state), share: S.percent(c.holdout_share, 0),
    });
    const launch = $("campaign-launch");
    launch.hidden = c.status !== "draft";
    launch.disabled = false;
    launch.textContent = t("Launch");
    if (state.shownLaunch !== id) $("launch-result").hidden = true;
    $("report").hidden = c.status === "draft";
    if (c.status !== "draft") {
      window.TierlineCampaignReport.show(id, $("members-arm").value);
    }
  }

  async function launch() {
    const id = state.current;
    const button = $("campaign-launch");
    const result = $("launch-result");
    button.disabled = true;
    button.textContent = t("Launching…");
    result.hidden = false;
    result.dataset.kind = "busy";
    result.textContent = t("Launching…");
    let answer;
    try {
      answer = await api("POST", "/api/campaigns/" + id + "/launch");
    } catch (err) {
      result.dataset.kind = "error";
      result.textContent = err.message;
      button.disabled = false;
      button.textContent = t("Launch");
      if (err.status === 401) T.showError(err);
      return;
    }
    const l = answer.launch;
    const skipped = Object.keys(l.skipped).map(function (reason) {
      return t(SKIP_REASONS[reason] || reason) + ": " + l.skipped[reason].count;
    });
    result.dataset.kind = "done";
    result.textContent = t("Launched: {called} clients put into the workflow, {control} held back as the control group.",
      { called: l.called, control: l.control }) + " " +
      (skipped.length ? t("Skipped: {reasons}.", { reasons: skipped.join(", ") }) : t("Nobody was skipped."));
    state.shownLaunch = id;
    await loadCampaigns();
    await openCampaign(id);
  }

  S.parts.push(function start() {
    $("campaign-form").addEventListener("submit", createCampaign);
    $("campaign-kind").addEventListener("change", fillEntryStates);
    $("campaign-entry").addEventListener("change", showOperators);
    $("campaign-launch").addEventListener("click", launch);
    S.on("filters", function () { fillSegments(); renderList(); });
    S.on("groups", function () { fillSegments(); renderList(); });
    S.on("workflow", renderList);
    S.on("campaign-changed", loadCampaigns);
    Promise.all([
      api("GET", "/api/campaigns/entry-states"), api("GET", "/api/users"),
    ]).then(function (answers) {
      state.entryStates = answers[0].states;
      state.users = answers[1].users;
      fillEntryStates();
    }).catch(T.showError);
    loadCampaigns();
  });

  S.campaigns = { current: function () { return state.current; } };
})();
