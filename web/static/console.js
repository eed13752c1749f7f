/* Tierline operator console: the call queue, screen pops from /ws, the client card, and
   one-click outcomes. Everything the server sends is shown with textContent (T.el), never
   parsed as HTML. */
"use strict";

(function () {
  const T = window.Tierline;
  const t = T.t;
  const el = T.el;

  const QUEUE_REFRESH_MS = 60000;
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const SILENCE_LIMIT_MS = 90000; // no ping for this long after the first: the link is dead

  const S = {
    queue: [],
    missed: [],
    calls: new Map(), // call_id -> {pop, state, outbound, number, duration_s, long_call}
    view: null, // {kind: "card"|"restricted"|"chooser"|"lead"|"message", callId, card}
    ws: null,
    backoff: BACKOFF_MIN_MS,
    failures: 0,
    lastMessageAt: 0,
    pinged: false,
  };

  const $ = function (id) { return document.getElementById(id); };
  const human = function (name) { return t(String(name).replace(/_/g, " ")); };

  /* Reasons often repeat the "when" shown next to them ("Tue 24 Nov 10:00 …: call back"). */
  function reasonText(when, reason) {
    const text = String(reason || "");
    return when && text.startsWith(when + ": ") ? text.slice(when.length + 2) : text;
  }

  /* ---------------------------------------------------------------- queue */

  let queueTimer = null;

  async function refreshQueue() {
    try {
      const data = await T.api("GET", "/api/queue");
      S.queue = (data && data.items) || [];
      S.missed = (data && data.missed) || [];
      renderQueue();
      renderMissed();
    } catch (err) {
      T.showError(err);
    }
  }

  function refreshQueueSoon() {
    if (queueTimer) clearTimeout(queueTimer);
    queueTimer = setTimeout(refreshQueue, 250);
  }

  function renderQueue() {
    const list = T.clear($("queue"));
    $("queue-empty").hidden = S.queue.length > 0;
    $("call-next").disabled = S.queue.length === 0;
    S.queue.forEach(function (item, index) {
      const c = item.client || {};
      const flags = [];
      if (item.overdue) flags.push(el("span", { class: "badge badge-overdue" }, t("overdue")));
      if (item.escalated) flags.push(el("span", { class: "badge badge-escalated" }, t("escalated")));
      list.appendChild(el("li", {
        class: "q-item" + (item.overdue ? " is-overdue" : ""),
        dataset: { clientId: c.id, index: index },
      },
        el("button", {
          type: "button", class: "q-open", title: t("Open client"),
          onclick: function () { openClient(c.id); },
        },
          el("span", { class: "q-name" }, c.name || "#" + c.id),
          c.company ? el("span", { class: "q-company" }, c.company) : null,
          el("span", { class: "q-when" }, item.when || T.formatTime(item.due_at)),
          el("span", { class: "q-reason", title: item.reason || "" }, human(item.kind || ""),
            item.reason ? " — " + reasonText(item.when, item.reason) : ""),
          flags),
        el("button", {
          type: "button", class: "q-call", "aria-label": t("Call") + " " + (c.name || ""),
          onclick: function () { callClient(c.id); },
        }, t("Call"))));
    });
  }

  /* Inbound calls nobody answered and nobody has returned yet (engine/missed_calls.py). A call
     back, answered or not, takes one off the list; so does "No call back needed". */
  function renderMissed() {
    const list = T.clear($("missed-list"));
    $("missed").hidden = S.missed.length === 0;
    S.missed.forEach(function (item) {
      const c = item.client;
      const number = item.written || item.number;
      const label = c ? (c.name || "#" + c.id) : number;
      const time = T.formatRecent(item.last_at);
      const when = item.times > 1 ? t("{n} missed calls, the last {time}", { n: item.times, time: time })
        : t("missed {time}", { time: time });
      list.appendChild(el("li", { class: "q-item is-missed", dataset: { number: item.number } },
        el("button", {
          type: "button", class: "q-open", title: c ? t("Open client") : t("New lead"),
          onclick: function () { if (c) openClient(c.id); else showNewLead(item, null); },
        },
          el("span", { class: "q-name" }, c ? label : t("Unknown caller")),
          el("span", { class: "q-company" }, c && c.company ? c.company + " · " : null,
            el("span", { class: "q-number" }, number)),
          el("span", { class: "q-when" }, when)),
        c ? el("button", {
          type: "button", class: "q-call", "aria-label": t("Call back") + " " + label,
          onclick: function () { callBack(c.id, item.number); },
        }, t("Call back")) : el("button", {
          type: "button", class: "q-call", "aria-label": t("New lead") + " " + label,
          onclick: function () { showNewLead(item, null); },
        }, t("New lead")),
        el("button", {
          type: "button", class: "q-dismiss", title: t("No call back needed"),
          "aria-label": t("No call back needed") + ": " + label,
          onclick: function () { dismissMissed(item.number); },
        }, "×")));
    });
  }

  async function callBack(clientId, number) {
    const card = await openClient(clientId);
    if (card) await dial(card, number);
    refreshQueueSoon();
  }

  async function dismissMissed(number) {
    try {
      await T.api("POST", "/api/calls/missed/dismiss", { number: number });
    } catch (err) {
      T.showError(err);
    }
    refreshQueue();
  }

  function moveQueueFocus(delta) {
    const buttons = Array.from(document.querySelectorAll("#queue .q-call"));
    if (!buttons.length) return;
    const at = buttons.indexOf(document.activeElement);
    const next = at < 0 ? 0 : Math.max(0, Math.min(buttons.length - 1, at + delta));
    buttons[next].focus();
  }

  /* ---------------------------------------------------------------- dialling */

  async function callClient(clientId) {
    const card = await openClient(clientId);
    if (card && card.phones && card.phones.length) dial(card, card.phones[0].e164);
  }

  async function dial(card, number, overrideReason) {
    const body = { client_id: card.id, number: number };
    if (overrideReason) body.override_reason = overrideReason;
    try {
      const answer = await T.api("POST", "/api/calls/dial", body);
      const callId = answer.call_id;
      // The PBX's "dialing" pop for this call may have arrived before this answer did.
      const known = S.calls.get(callId);
      S.calls.set(callId, {
        pop: known ? known.pop : null,
        state: known && known.state !== "ringing" ? known.state : "dialing",
        outbound: true,
        number: answer.number || number,
      });
      if (S.view && S.view.kind === "card" && S.view.card.id === card.id) {
        S.view.callId = callId;
        renderBanner();
        syncOutcomeVisibility();
      }
      renderLiveCalls();
      T.flash(t("Dialling…") + " " + asWritten(card, number), "info");
    } catch (err) {
      // Only the calling window may be overridden; a do-not-call request never is.
      if (err.status === 400 && err.body.field === "override_reason" && !overrideReason) {
        offerOverride(card, number, err);
      }
      else T.showError(err);
    }
  }

  function offerOverride(card, number, err) {
    const box = document.querySelector("#pop .override");
    if (!box) { T.showError(err); return; }
    T.clear(box).hidden = false;
    const reason = el("input", { type: "text", class: "override-reason", required: true,
      placeholder: t("Reason for calling anyway"), "aria-label": t("Reason for calling anyway") });
    box.appendChild(el("p", { class: "form-error" }, err.message));
    box.appendChild(el("form", {
      class: "inline-form",
      onsubmit: function (ev) {
        ev.preventDefault();
        if (!reason.value.trim()) return;
        box.hidden = true;
        dial(card, number, reason.value.trim());
      },
    }, reason, el("button", { type: "submit", class: "warn" }, t("Call anyway")),
      el("button", { type: "button", onclick: function () { box.hidden = true; } }, t("Dismiss"))));
    reason.focus();
  }

  /* ---------------------------------------------------------------- the pop area */

  async function openClient(clientId, callId) {
    try {
      const card = await T.api("GET", "/api/clients/" + encodeURIComponent(clientId));
      showCard(card, callId || null);
      history.replaceState(null, "", "#client=" + card.id);
      return card;
    } catch (err) {
      if (err.status === 403) {
        showMessage(t("You may not open this client.") + " (403) " + err.message, "forbidden");
      }
      T.showError(err);
      return null;
    }
  }

  function showPop(callId) {
    const call = S.calls.get(callId);
    if (!call || !call.pop) return;
    const pop = call.pop;
    const client = pop.client;
    if (client && client.restricted) {
      S.view = { kind: "restricted", callId: callId };
      const area = T.clear($("pop"));
      area.appendChild(el("section", { class: "restricted", "data-testid": "restricted" },
        el("h2", null, t("This caller is another tier's client.")),
        el("p", null, t("Tier") + ": ", el("span", { class: "badge tier-" + client.tier }, human(client.tier)))));
    } else if (client) {
      showCard(client, callId);
    } else if (pop.matches && pop.matches.length) {
      showChooser(pop, callId);
    } else {
      showNewLead(pop, callId);
    }
    renderBanner();
    renderLiveCalls();
  }

  function showMessage(text, testid) {
    S.view = { kind: "message", callId: null };
    const area = T.clear($("pop"));
    area.appendChild(el("p", { class: "pop-message", "data-testid": testid || "pop-message" }, text));
    renderBanner();
  }

  function showChooser(pop, callId) {
    S.view = { kind: "chooser", callId: callId };
    const area = T.clear($("pop"));
    const list = el("ul", { class: "chooser-list" });
    pop.matches.forEach(function (m) {
      if (m.restricted) {
        list.appendChild(el("li", { class: "muted" }, t("This caller is another tier's client."),
          " ", el("span", { class: "badge tier-" + m.tier }, human(m.tier))));
        return;
      }
      list.appendChild(el("li", null,
        el("span", { class: "chooser-name" }, m.name),
        m.company ? el("span", { class: "muted" }, " · " + m.company) : null,
        el("span", { class: "badge tier-" + m.tier }, human(m.tier)),
        el("span", { class: "badge state-badge" }, human(m.state)),
        el("button", { type: "button", class: "primary", dataset: { clientId: m.id },
          onclick: function () { linkCall(callId, m.id); } }, t("This is the one"))));
    });
    area.appendChild(el("section", { class: "chooser", "data-testid": "chooser" },
      el("h2", null, t("Several clients have this number — who is calling?")), list));
    const first = list.querySelector("button");
    if (first) first.focus();
  }

  async function linkCall(callId, clientId) {
    try {
      const card = await T.api("POST", "/api/calls/" + encodeURIComponent(callId) + "/link",
        { client_id: clientId });
      showCard(card, callId);
    } catch (err) {
      T.showError(err);
    }
  }

  function showNewLead(pop, callId) {
    S.view = { kind: "lead", callId: callId };
    const area = T.clear($("pop"));
    const field = function (label, name, attrs) {
      const id = "lead-" + name;
      return el("div", { class: "field" }, el("label", { for: id }, t(label)),
        el("input", Object.assign({ id: id, name: name, type: "text" }, attrs || {})));
    };
    const form = el("form", { class: "lead-form", "data-testid": "new-lead", onsubmit: submitLead },
      el("h2", null, t("Unknown number"), " — ", t("New lead")),
      field("Name", "name", { required: true, autocomplete: "off" }),
      field("Company", "company"),
      field("E-mail", "email", { type: "email" }),
      field("Phone", "phone", { value: pop.written || pop.number || "", required: true }),
      el("button", { type: "submit", class: "primary" }, t("Create lead")));
    form.dataset.callId = callId || "";
    area.appendChild(form);
    form.querySelector("#lead-name").focus();
  }

  async function submitLead(ev) {
    ev.preventDefault();
    const form = ev.currentTarget;
    const value = function (name) { return form.elements[name].value.trim(); };
    const body = { name: value("name"), phones: [value("phone")] };
    if (value("company")) body.company = value("company");
    if (value("email")) body.email = value("email");
    if (form.dataset.callId) body.call_id = form.dataset.callId;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const card = await T.api("POST", "/api/clients", body);
      showCard(card, form.dataset.callId || null);
      refreshQueueSoon();
    } catch (err) {
      button.disabled = false;
      T.showError(err);
    }
  }

  /* ---------------------------------------------------------------- call scripts */

  const PAGE = (function () {
    try {
      return JSON.parse($("page-data").textContent) || {};
    } catch (e) {
      return {}; // common.js has already said so: without page data nothing is translated
    }
  })();
  const PLACEHOLDER = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g; // as engine/workflow/validate.py

  function scriptValues(card) {
    const me = T.user || {};
    return {
      operator: me.display_name || me.username || "",
      company: PAGE.company_name || "",
      client: card.name || "",
    };
  }

  /* The script with its {placeholders} filled in, as strings and nodes for el(): never HTML.
     A known placeholder without a value shows "…", titled with its name: braces would be
     read aloud, and nothing at all would silently drop a word from the sentence. An unknown
     one stays as written, so whoever wrote it sees the typo (publishing refuses new ones,
     but a version published before that rule may still say {product}). */
  function fillScript(script, values) {
    const text = String(script || "");
    const parts = [];
    let at = 0;
    for (const m of text.matchAll(PLACEHOLDER)) {
      if (!Object.prototype.hasOwnProperty.call(values, m[1])) continue;
      parts.push(text.slice(at, m.index));
      parts.push(values[m[1]] || el("span", {
        class: "script-missing", title: t("Not set: {name}", { name: m[1] }),
      }, "…"));
      at = m.index + m[0].length;
    }
    parts.push(text.slice(at));
    return parts;
  }

  /* ---------------------------------------------------------------- the card */

  function showCard(card, callId, notice) {
    S.view = { kind: "card", callId: callId || null, card: card, recorded: false };
    const area = T.clear($("pop"));
    area.appendChild(buildCard(card, notice));
    markOverdue();
    renderBanner();
    syncOutcomeVisibility();
  }

  function section(title, testid) {
    const body = el("div", { class: "section-body" });
    const node = el("section", { class: "card-section", "data-testid": testid },
      el("h3", null, t(title)), body);
    return { node: node, body: body };
  }

  // A card stays open for a whole call and longer: its next follow-up turns overdue on the
  // operator's screen when the moment passes, by the queue's yardstick (due + grace), which
  // the server sends as overdue_at.
  function markOverdue() {
    document.querySelectorAll(".next-followup[data-overdue-at]").forEach(function (node) {
      const late = Date.now() > new Date(node.dataset.overdueAt).getTime();  // as the server says
      node.classList.toggle("is-overdue", late);
      const badge = node.querySelector(".fu-overdue");
      if (badge) badge.hidden = !late;
    });
  }

  function buildCard(card, notice) {
    const fu = card.next_followup;
    const phones = el("span", { class: "phones" });
    (card.phones || []).forEach(function (p) {
      phones.appendChild(el("button", {
        type: "button", class: "phone", title: t("Call") + " " + p.e164,
        dataset: { number: p.e164 },
        onclick: function () { dial(card, p.e164); },
      }, "☎ ", p.raw || p.e164, p.label ? " (" + p.label + ")" : ""));
    });
    const facts = el("dl", { class: "facts" },
      el("dt", null, t("Tier")), el("dd", null, el("span", { class: "badge tier-" + card.tier }, human(card.tier))),
      el("dt", null, t("State")), el("dd", { class: "state-title", "data-testid": "state" }, card.state_title || card.state),
      el("dt", null, t("Owner")), el("dd", null, card.owner || t("unowned")),
      el("dt", null, t("Phones")), el("dd", null, phones),
      el("dt", null, t("Next follow-up")),
      el("dd", {
        class: "next-followup", "data-testid": "next-followup",
        dataset: fu && fu.overdue_at ? { overdueAt: fu.overdue_at } : {},
      },
        fu ? [el("strong", { class: "fu-when" }, fu.when || T.formatTime(fu.due_at)),
          fu.escalation_level > 0 ? el("span", { class: "badge badge-escalated" }, t("escalated")) : null,
          el("span", { class: "badge badge-overdue fu-overdue", hidden: true }, t("overdue")),
          el("div", { class: "fu-reason" }, human(fu.kind), " — ",
            reasonText(fu.when, fu.reason) || human(fu.kind))]
          : t("none scheduled")));
    if (card.email) facts.appendChild(el("dt", null, t("E-mail")));
    if (card.email) facts.appendChild(el("dd", null, card.email));

    const head = el("header", { class: "card-head" },
      el("h2", { class: "client-name", "data-testid": "client-name" }, card.name),
      card.company ? el("span", { class: "company" }, card.company) : null,
      el("span", { class: "badge state-badge" }, card.state_title || card.state),
      card.do_not_call ? el("span", { class: "badge badge-overdue" }, t("Do not call")) : null);

    const script = section("Script", "script");
    script.body.appendChild(el("div", { class: "script-text" },
      fillScript(card.script, scriptValues(card))));

    const checklist = section("Quality checklist", "checklist");
    (card.checklist || []).forEach(function (stage) {
      const id = "check-" + stage;
      checklist.body.appendChild(el("label", { class: "check", for: id },
        el("input", { type: "checkbox", id: id, name: stage, class: "checklist-item" }), " ", human(stage)));
    });

    const calls = section("Last calls", "calls");
    const callList = el("ul", { class: "plain" });
    (card.calls || []).forEach(function (c) { callList.appendChild(callItem(c)); });
    calls.body.appendChild(callList);

    const hist = section("History", "history");
    const histList = el("ul", { class: "plain" });
    (card.history || []).forEach(function (h) {
      histList.appendChild(el("li", null, T.formatTime(h.at), " · ", human(h.event), ": ",
        human(h.from || "—"), " → ", human(h.to), h.note ? el("div", { class: "muted" }, h.note) : null));
    });
    hist.body.appendChild(histList);

    const notes = section("Notes", "notes");
    const noteList = el("ul", { class: "plain" });
    (card.notes || []).forEach(function (n) {
      noteList.appendChild(el("li", null, el("span", { class: "muted" }, T.formatTime(n.at)), " ", n.text));
    });
    const noteInput = el("input", { type: "text", name: "note", "aria-label": t("Add note") });
    notes.body.appendChild(el("form", { class: "inline-form", onsubmit: function (ev) {
      ev.preventDefault();
      addNote(card.id, noteInput.value.trim());
    } }, noteInput, el("button", { type: "submit" }, t("Add note"))));
    notes.body.appendChild(noteList);

    return el("article", {
      class: "card", "data-testid": "card",
      dataset: { clientId: card.id, revision: card.revision, state: card.state },
    },
      head,
      notice ? el("p", { class: "notice-conflict", role: "alert", "data-testid": "conflict" }, notice) : null,
      el("div", { class: "override", hidden: true }),
      el("div", { class: "card-grid" },
        el("div", { class: "card-main" }, facts, buildOutcome(card), script.node, checklist.node),
        el("div", { class: "card-side" }, calls.node, hist.node, notes.node)));
  }

  function callItem(c) {
    // An incoming call that ended unanswered has no talk time to show: it was missed.
    const missed = c.direction === "inbound" && c.status === "ended" && c.answered === false;
    return el("li", { class: missed ? "call-missed" : null }, T.formatTime(c.started_at), " · ",
      human(c.direction || ""), " · ", missed ? t("missed") : formatDuration(c.duration_s),
      " · ", c.outcome ? human(c.outcome) : t("no outcome"));
  }

  /* The call that just ended is in the log now: list it among the card's last calls, and
     leave the rest of the card (an outcome being chosen, a note being typed) as it is. */
  async function refreshLastCalls(callId) {
    const view = S.view;
    if (!view || view.kind !== "card" || view.callId !== callId || !view.card) return;
    let fresh;
    try {
      fresh = await T.api("GET", "/api/clients/" + encodeURIComponent(view.card.id));
    } catch (err) {
      return; // the list stays as it was; the call is logged whatever this page shows
    }
    const list = document.querySelector('#pop [data-testid="calls"] ul');
    if (S.view !== view || !list) return; // the operator moved on meanwhile
    T.clear(list);
    (fresh.calls || []).forEach(function (c) { list.appendChild(callItem(c)); });
  }

  function buildOutcome(card) {
    const events = card.events || [];
    const buttons = el("div", { class: "outcome-buttons" });
    events.forEach(function (event, i) {
      buttons.appendChild(el("button", {
        type: "button", class: "outcome-btn outcome-" + event, dataset: { event: event },
        title: i < 9 ? String(i + 1) : null,
        onclick: function () { recordOutcome(card, event); },
      }, i < 9 ? el("kbd", null, String(i + 1)) : null, " ", human(event)));
    });
    // "Call me back at 15:00" is the client's 15:00: the picker is in the client's zone.
    const when = el("input", { type: "datetime-local", id: "callback-at", name: "follow_up_at",
      dataset: { tz: card.timezone || "" } });
    const note = el("input", { type: "text", id: "outcome-note", name: "note",
      placeholder: t("Note (optional)"), "aria-label": t("Note (optional)") });
    let zone = null;
    if (card.timezone) {
      try {
        zone = el("span", { class: "muted client-zone", "data-testid": "client-zone" },
          t("client time, {tz}: now {time}", { tz: card.timezone, time: T.timeIn(card.timezone) }));
      } catch (err) { // a zone this browser does not know: the operator's own time, said so
        when.dataset.tz = "";
        zone = el("span", { class: "muted client-zone", "data-testid": "client-zone" },
          t("your own time: this browser does not know {tz}", { tz: card.timezone }));
      }
    }
    return el("section", { class: "outcome", "data-testid": "outcome", hidden: true },
      el("h3", null, t("Outcome")), buttons,
      el("div", { class: "outcome-extra" },
        el("label", { for: "callback-at" }, t("Call back at")), when, zone, note),
      el("p", { class: "recorded", "data-testid": "recorded", hidden: true }));
  }

  function checklistValues() {
    const values = {};
    document.querySelectorAll("#pop .checklist-item").forEach(function (box) {
      values[box.name] = box.checked;
    });
    return values;
  }

  async function recordOutcome(card, event) {
    const view = S.view;
    const body = { event: event, expected_revision: card.revision, checklist: checklistValues() };
    const note = $("outcome-note").value.trim();
    if (note) body.note = note;
    const picker = $("callback-at");
    if (event === "call_back" && picker.value) {
      body.follow_up_at = picker.dataset.tz ? T.zonedToIso(picker.value, picker.dataset.tz)
        : new Date(picker.value).toISOString();
    }
    if (view && view.callId) body.call_id = view.callId;
    document.querySelectorAll("#pop .outcome-btn").forEach(function (b) { b.disabled = true; });
    try {
      const answer = await T.api("POST", "/api/clients/" + card.id + "/events", body);
      if (view && view.callId) S.calls.delete(view.callId);
      showCard(answer.client, null);
      S.view.recorded = true;
      const fu = answer.client.next_followup;
      const text = t("Recorded.") + " " + (answer.client.state_title || answer.client.state) +
        (fu ? " · " + t("Next follow-up") + ": " + (fu.when || T.formatTime(fu.due_at)) : "");
      const line = document.querySelector("#pop .recorded");
      line.textContent = text;
      line.hidden = false;
      collapseOutcome();
      renderLiveCalls();
      refreshQueueSoon();
    } catch (err) {
      if (err.status === 409) {
        await reloadAfterConflict(card.id, view ? view.callId : null);
      } else {
        document.querySelectorAll("#pop .outcome-btn").forEach(function (b) { b.disabled = false; });
        T.showError(err);
      }
    }
  }

  /* After an outcome is recorded the buttons fold away, so a second click cannot record a
     second outcome by accident; "Record another outcome" brings them back. */
  function collapseOutcome() {
    const panel = document.querySelector("#pop .outcome");
    if (!panel) return;
    const parts = panel.querySelectorAll(".outcome-buttons, .outcome-extra");
    parts.forEach(function (p) { p.hidden = true; });
    const again = el("button", { type: "button", class: "outcome-again",
      onclick: function () {
        parts.forEach(function (p) { p.hidden = false; });
        again.remove();
      } }, t("Record another outcome"));
    panel.appendChild(again);
  }

  async function reloadAfterConflict(clientId, callId) {
    const message = t("Someone else changed this client — reloaded. Check the card and choose again.");
    try {
      const fresh = await T.api("GET", "/api/clients/" + clientId);
      showCard(fresh, callId, message);
      T.flash(message, "warn");
    } catch (err) {
      T.showError(err);
    }
  }

  async function addNote(clientId, text) {
    if (!text) return;
    try {
      await T.api("POST", "/api/clients/" + clientId + "/notes", { text: text });
      const card = await T.api("GET", "/api/clients/" + clientId);
      showCard(card, S.view ? S.view.callId : null);
      T.flash(t("Note added."), "info");
    } catch (err) {
      T.showError(err);
    }
  }

  /* The outcome panel waits while the bound call is ringing or up, and shows after hangup. */
  function syncOutcomeVisibility() {
    const panel = document.querySelector("#pop .outcome");
    if (!panel || !S.view || S.view.kind !== "card") return;
    const call = S.view.callId ? S.calls.get(S.view.callId) : null;
    const live = call && (call.state === "ringing" || call.state === "answered");
    const wasHidden = panel.hidden;
    panel.hidden = !!live;
    if (wasHidden && !panel.hidden && call && call.state === "hangup") {
      const first = panel.querySelector(".outcome-btn");
      if (first) first.focus();
    }
  }

  /* ---------------------------------------------------------------- calls */

  function formatDuration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const m = Math.floor(seconds / 60);
    const s = Math.round(seconds % 60);
    return (m ? m + " " + t("min") + " " : "") + s + " " + t("s");
  }

  function callLabel(call) {
    if (call.state === "answered") return t("On the call");
    if (call.state === "hangup" && call.missed) {
      return call.outbound ? t("No answer") : t("Missed call");
    }
    if (call.state === "hangup") return t("Call ended");
    if (call.state === "dialing") return t("Dialling…");
    return t("Ringing");
  }

  /* The PBX and the API speak E.164 ("+79161234567"); the operator reads a number as the
     card writes it ("+7 916 123-45-67") when the card has it. */
  function asWritten(card, e164) {
    const phone = card && (card.phones || []).find(function (p) { return p.e164 === e164; });
    return (phone && phone.raw) || e164 || "";
  }

  /* A call's number as its pop writes it, or as the card it was dialled from does (an
     outgoing call has no pop of its own until the PBX's "dialing" event). */
  function shownNumber(call, callId) {
    if (call.pop && call.pop.written) return call.pop.written;
    const viewed = S.view && S.view.kind === "card" && S.view.callId === callId ? S.view.card : null;
    return asWritten((call.pop && call.pop.client) || viewed, call.number);
  }

  function renderBanner() {
    const banner = $("call-banner");
    const callId = S.view && S.view.callId;
    const call = callId ? S.calls.get(callId) : null;
    if (!call) {
      banner.hidden = true;
      banner.removeAttribute("data-state");
      return;
    }
    T.clear(banner);
    banner.dataset.state = call.state;
    banner.dataset.callId = callId;
    banner.appendChild(el("strong", null, call.outbound ? t("Outgoing call") : t("Incoming call")));
    banner.appendChild(el("span", { class: "banner-number" }, shownNumber(call, callId)));
    banner.appendChild(el("span", { class: "banner-state", "data-testid": "call-state" }, callLabel(call)));
    if (call.state === "hangup" && call.duration_s !== undefined && !call.missed) {
      banner.appendChild(el("span", null, formatDuration(call.duration_s)));
    }
    if (call.long_call) banner.appendChild(el("span", { class: "badge" }, "10+ " + t("min")));
    banner.hidden = false;
  }

  function renderLiveCalls() {
    const strip = T.clear($("live-calls"));
    const popped = Array.from(S.calls.values()).filter(function (c) { return c.pop; });
    if (popped.length < 2) return; // one call: the banner says it all
    S.calls.forEach(function (call, callId) {
      if (!call.pop) return;
      const who = call.pop.client && !call.pop.client.restricted ? call.pop.client.name : shownNumber(call, callId);
      const current = S.view && S.view.callId === callId;
      strip.appendChild(el("button", {
        type: "button", class: "live-call call-" + call.state + (current ? " is-current" : ""),
        dataset: { callId: callId }, onclick: function () { showPop(callId); },
      }, who || "", " · ", callLabel(call)));
    });
  }

  function onScreenPop(msg) {
    const known = S.calls.get(msg.call_id);
    if (known && known.outbound) {
      // The pop of a call this console dialled: its card is already on screen.
      known.pop = msg;
      if (!(S.view && S.view.callId === msg.call_id)) showPop(msg.call_id);
      renderLiveCalls();
      return;
    }
    S.calls.set(msg.call_id, {
      pop: msg, state: msg.direction === "outbound" ? "dialing" : "ringing",
      outbound: msg.direction === "outbound", number: msg.number,
    });
    showPop(msg.call_id);
  }

  /* A colleague answered a call that rang here too (a ring group, a queue): its pop closes,
     there is nothing to wrap up. What the operator has typed into it is never thrown away:
     then the card stays, no longer tied to the call. */
  function closeTakenCall(callId) {
    S.calls.delete(callId);
    if (S.view && S.view.callId === callId) {
      if (typedInto($("pop"))) {
        S.view.callId = null;
        T.flash(t("A colleague answered this call."), "info");
      } else {
        showMessage(t("A colleague answered this call."), "answered-elsewhere");
      }
    }
    renderBanner();
    renderLiveCalls();
  }

  function typedInto(area) {
    return Array.from(area.querySelectorAll("input, textarea")).some(function (field) {
      if (field.type === "checkbox" || field.type === "radio") {
        return field.checked !== field.defaultChecked;
      }
      return field.value !== field.defaultValue;
    });
  }

  function onCallState(msg) {
    if (msg.state === "hangup" && msg.reason === "answered_elsewhere") {
      closeTakenCall(msg.call_id);
      return;
    }
    let call = S.calls.get(msg.call_id);
    if (!call) {
      call = { pop: null, state: msg.state, outbound: true, number: "" };
      S.calls.set(msg.call_id, call);
    }
    call.state = msg.state;
    call.missed = msg.reason === "not_answered";
    if (call.missed && !call.outbound) refreshQueueSoon(); // a call to call back
    if (msg.duration_s !== undefined && msg.duration_s !== null) call.duration_s = msg.duration_s;
    if (msg.long_call) call.long_call = true;
    if (S.view && S.view.callId === msg.call_id) {
      renderBanner();
      syncOutcomeVisibility();
      if (msg.state === "hangup") refreshLastCalls(msg.call_id);
    }
    // A call that ended before anyone opened a card leaves nothing to record.
    if (msg.state === "hangup" && !call.pop && !(S.view && S.view.callId === msg.call_id)) {
      S.calls.delete(msg.call_id);
    }
    renderLiveCalls();
  }

  /* ---------------------------------------------------------------- websocket */

  function setOnline(online) {
    const banner = $("offline-banner");
    banner.textContent = t("Offline — reconnecting…");
    banner.hidden = online;
    document.body.classList.toggle("is-offline", !online);
    document.body.dataset.ws = online ? "open" : "closed";
  }

  function connect() {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try {
      ws = new WebSocket(scheme + "//" + window.location.host + "/ws");
    } catch (e) {
      scheduleReconnect();
      return;
    }
    S.ws = ws;
    ws.addEventListener("open", function () {
      S.backoff = BACKOFF_MIN_MS;
      S.failures = 0;
      S.lastMessageAt = Date.now();
      S.pinged = false;
      setOnline(true);
      refreshQueue();
    });
    ws.addEventListener("message", function (ev) {
      S.lastMessageAt = Date.now();
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      handle(msg, ws);
    });
    ws.addEventListener("close", function () {
      if (S.ws !== ws) return;
      S.ws = null;
      setOnline(false);
      scheduleReconnect();
    });
  }

  async function scheduleReconnect() {
    S.failures += 1;
    if (S.failures >= 2) {
      // Repeated failures may mean the session ended rather than the network.
      try {
        await T.api("GET", "/api/me");
      } catch (err) {
        if (err.status === 401) { T.showError(err); return; }
      }
    }
    const wait = S.backoff * (0.75 + Math.random() * 0.5);
    S.backoff = Math.min(S.backoff * 2, BACKOFF_MAX_MS);
    setTimeout(connect, wait);
  }

  function watchSilence() {
    const ws = S.ws;
    if (ws && S.pinged && Date.now() - S.lastMessageAt > SILENCE_LIMIT_MS) ws.close();
  }

  function handle(msg, ws) {
    switch (msg.type) {
      case "ping":
        S.pinged = true;
        if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "pong" }));
        break;
      case "hello":
        // Back after being offline: the calls still live, and what became of the others.
        (msg.live_calls || []).forEach(function (pop) {
          const known = S.calls.get(pop.call_id);
          if (!known) {
            S.calls.set(pop.call_id, { pop: pop, state: pop.state || "ringing", number: pop.number });
          } else if (pop.state && known.state !== pop.state) {
            onCallState({ type: "call_state", call_id: pop.call_id, state: pop.state });
          }
        });
        (msg.ended_calls || []).forEach(function (state) {
          const known = S.calls.get(state.call_id);
          if (known && known.state !== "hangup") onCallState(state);
        });
        if ((!S.view || S.view.kind === "message") && msg.live_calls && msg.live_calls.length) {
          showPop(msg.live_calls[msg.live_calls.length - 1].call_id);
        }
        renderLiveCalls();
        break;
      case "screen_pop":
        onScreenPop(msg);
        break;
      case "call_state":
        onCallState(msg);
        break;
      case "queue_changed":
      case "follow_up_due":
        refreshQueueSoon();
        break;
      default:
        break;
    }
  }

  /* ---------------------------------------------------------------- search & keys */

  async function search(ev) {
    ev.preventDefault();
    const q = $("search").value.trim();
    const results = T.clear($("search-results"));
    if (!q) return;
    const key = /^[+\d][\d\s\-()]{4,}$/.test(q) ? "phone" : "q";
    try {
      const data = await T.api("GET", "/api/clients?" + key + "=" + encodeURIComponent(q) + "&limit=20");
      const found = (data && data.clients) || [];
      if (!found.length) results.appendChild(el("li", { class: "muted" }, t("No clients found.")));
      found.forEach(function (c) {
        results.appendChild(el("li", null, el("button", {
          type: "button", class: "link", onclick: function () { openClient(c.id); },
        }, c.name, c.company ? " · " + c.company : "", " · ", human(c.state))));
      });
    } catch (err) {
      T.showError(err);
    }
  }

  function typing(target) {
    return target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" ||
      target.tagName === "SELECT" || target.isContentEditable);
  }

  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev.target)) return;
    if (ev.key === "n" || ev.key === "N") {
      ev.preventDefault();
      $("call-next").click();
    } else if (ev.key === "/") {
      ev.preventDefault();
      $("search").focus();
    } else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      if (ev.target.closest && ev.target.closest("#queue")) {
        ev.preventDefault();
        moveQueueFocus(ev.key === "ArrowDown" ? 1 : -1);
      }
    } else if (/^[1-9]$/.test(ev.key)) {
      const panel = document.querySelector("#pop .outcome");
      if (panel && !panel.hidden) {
        const button = panel.querySelectorAll(".outcome-btn")[Number(ev.key) - 1];
        if (button && !button.disabled) { ev.preventDefault(); button.click(); }
      }
    }
  }

  function openFromHash() {
    const match = /^#client=(\d+)$/.exec(window.location.hash);
    if (match) openClient(match[1]);
  }

  // For the browser tests and for support staff poking at a live console.
  window.TierlineConsole = {
    socket: function () { return S.ws; },
    view: function () { return S.view; },
    fillScript: fillScript,
  };

  document.addEventListener("DOMContentLoaded", function () {
    $("call-next").addEventListener("click", function () {
      if (S.queue.length) callClient(S.queue[0].client.id);
    });
    $("search-form").addEventListener("submit", search);
    document.addEventListener("keydown", onKey);
    window.addEventListener("hashchange", openFromHash);
    setInterval(refreshQueue, QUEUE_REFRESH_MS);
    setInterval(watchSilence, 15000);
    setInterval(markOverdue, 15000);
    refreshQueue();
    openFromHash();
    connect();
  });
})();
