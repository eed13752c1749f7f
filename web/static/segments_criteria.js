/* Tierline filter criteria, the model behind the editor: which fields a filter may test,
   which operators fit each field's type, and the translation between the criteria JSON of
   engine/filters.py and the editor's tree of groups ("all / any / none of") and conditions.
   Never SQL, never free text as a condition. */
"use strict";

window.TierlineCriteria = (function () {
  const T = window.Tierline;
  const t = T.t;
  const S = window.TierlineSegments;

  // type: which operators and which value control. Custom fields compare as numbers when
  // the value is a number (the API's rule), otherwise as text.
  const FIELDS = [
    { name: "tier", label: "Tier", type: "choice" },
    { name: "state", label: "State", type: "choice" },
    { name: "segment_class", label: "Segment class", type: "choice" },
    { name: "name", label: "Name", type: "text" },
    { name: "company", label: "Company", type: "text" },
    { name: "source", label: "Source", type: "text" },
    { name: "timezone", label: "Time zone", type: "text" },
    { name: "last_outcome", label: "Last call outcome", type: "text" },
    { name: "days_since_contact", label: "Days since last contact", type: "number" },
    { name: "created_at", label: "Created", type: "date" },
    { name: "custom", label: "Custom field", type: "custom" },
  ];
  const OPS = {
    choice: ["eq", "ne", "in", "empty", "set"],
    text: ["contains", "eq", "ne", "in", "empty", "set"],
    number: ["gte", "gt", "lte", "lt", "eq", "ne", "empty", "set"],
    // created_at compares with the start of the day: only these two read truthfully.
    date: ["gte", "lt"],
    custom: ["eq", "ne", "contains", "gt", "gte", "lt", "lte", "in", "empty", "set"],
  };
  const OP_LABELS = {
    eq: "is", ne: "is not", in: "is one of", contains: "contains", gt: "more than",
    gte: "at least", lt: "less than", lte: "at most", empty: "is empty", set: "is not empty",
  };
  const TYPE_LABELS = {
    date: { gte: "on or after", lt: "before" },
    number: { empty: "never contacted", set: "contacted at least once" },
  };
  const KINDS = [["all", "all of these conditions"], ["any", "any of these conditions"],
    ["none", "none of these conditions"]];
  const SEGMENT_CLASSES = ["key", "important", "regular"];
  const INCOMPLETE = {};

  let nextId = 1;

  function group(kind, children) {
    return { id: nextId++, type: "group", kind: kind, children: children || [] };
  }

  function leaf(field, op, value, key) {
    return { id: nextId++, type: "leaf", field: field, op: op, value: value, key: key || "" };
  }

  function fieldDef(name) {
    return FIELDS.find(function (f) { return f.name === name; }) ||
      { name: name, label: name, type: "text" };  // a field this page does not know yet
  }

  function choices(field) {
    if (field === "tier") return S.workflow.tiers.map(function (x) { return [x, x]; });
    if (field === "state") {
      return S.workflow.states.map(function (s) { return [s.name, s.title + " (" + s.name + ")"]; });
    }
    return SEGMENT_CLASSES.map(function (x) { return [x, t(x)]; });
  }

  /* ---- criteria JSON <-> the editor's tree ---------------------------------------------- */

  function fromJson(node) {
    if (node && Array.isArray(node.all)) return group("all", node.all.map(fromJson));
    if (node && Array.isArray(node.any)) return group("any", node.any.map(fromJson));
    if (node && node.not) {
      // not(any(xs)) is "none of xs"; not(x) is "none of [x]".
      const inner = node.not;
      return group("none", Array.isArray(inner.any) ? inner.any.map(fromJson) : [fromJson(inner)]);
    }
    const name = String((node && node.field) || "name");
    const custom = name.startsWith("custom.");
    let op = node.op, value = node.value;
    if (op === "is_null") {
      op = value ? "empty" : "set";
      value = "";
    } else if (op === "in") {
      const list = Array.isArray(value) ? value.map(String) : [String(value)];
      value = fieldDef(name).type === "choice" ? list : list.join(", ");
    } else {
      value = value === null || value === undefined ? "" : String(value);
    }
    return leaf(custom ? "custom" : name, op, value, custom ? name.slice(7) : "");
  }

  function load(criteria) {
    const node = fromJson(criteria || { all: [] });
    return node.type === "group" ? node : group("all", [node]);
  }

  function leafJson(n) {
    const f = fieldDef(n.field);
    const name = f.type === "custom" ? "custom." + n.key.trim() : n.field;
    if (f.type === "custom" && !n.key.trim()) return INCOMPLETE;
    if (n.op === "empty" || n.op === "set") return { field: name, op: "is_null", value: n.op === "empty" };
    if (n.op === "in") {
      let items = Array.isArray(n.value) ? n.value.slice()
        : String(n.value).split(",").map(function (x) { return x.trim(); }).filter(Boolean);
      if (f.type === "number") {
        if (!items.every(function (x) { return /^\d+$/.test(x); })) return INCOMPLETE;
        items = items.map(Number);
      }
      return items.length ? { field: name, op: "in", value: items } : INCOMPLETE;
    }
    const text = String(n.value === null || n.value === undefined ? "" : n.value);
    if (f.type === "number") {
      return /^\d+$/.test(text.trim()) ? { field: name, op: n.op, value: Number(text) } : INCOMPLETE;
    }
    if ((f.type === "date" || f.type === "choice") && !text) return INCOMPLETE;
    if (f.type === "custom" && n.op !== "contains" && /^-?\d+(\.\d+)?$/.test(text.trim())) {
      return { field: name, op: n.op, value: Number(text.trim()) };
    }
    return { field: name, op: n.op, value: text };
  }

  /* {criteria, incomplete: [node ids], paths: {API path: node id}} */
  function serialize(root) {
    const incomplete = [], paths = {};
    function walk(node, path) {
      paths[path] = node.id;
      if (node.type === "leaf") {
        const json = leafJson(node);
        if (json === INCOMPLETE) incomplete.push(node.id);
        return json;
      }
      const list = node.kind === "all" ? "all" : "any";
      const prefix = node.kind === "none" ? path + ".not" : path;
      const items = node.children.map(function (child, i) {
        return walk(child, prefix + "." + list + "[" + i + "]");
      });
      const body = {};
      body[list] = items;
      return node.kind === "none" ? { not: body } : body;
    }
    const criteria = walk(root, "$");
    return { criteria: criteria, incomplete: incomplete, paths: paths };
  }

  /* The node an API error names ("$.all[1]", or "$.any" for an empty group). */
  function nodeForPath(paths, path) {
    let p = String(path || "");
    while (p && !(p in paths)) {
      const cut = p.lastIndexOf(".");
      if (cut < 0) return null;
      p = p.slice(0, cut);
    }
    return p ? paths[p] : null;
  }

  return {
    FIELDS: FIELDS, OPS: OPS, OP_LABELS: OP_LABELS, TYPE_LABELS: TYPE_LABELS, KINDS: KINDS,
    group: group, leaf: leaf, fieldDef: fieldDef, choices: choices, load: load,
    fromJson: fromJson, serialize: serialize, nodeForPath: nodeForPath,
  };
})();
