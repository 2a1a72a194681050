// The explorer's instant cards (ui/instant_cards.py). Draws the cards the server sent, then follows the
// sliders: when a slider's value changes, the cards of the new configuration come from the table the
// server sent with them, at once, with no round trip. Python formats every value; this only chooses.

// The tables this page got, by id: the server sends each table to a session once, then only its id
// (ui/instant_cards.must_send_table). A few are kept (cost and kNN tables, of this and the last scores).
const TABLES = new Map();
const TABLES_KEPT = 8;
let reports = 0; // how often this page said it lacks a table (each report asks for one send)

function tableFor(data, setStateValue) {
  if (data.table) {
    TABLES.delete(data.table_id);
    TABLES.set(data.table_id, data.table);
    while (TABLES.size > TABLES_KEPT) TABLES.delete(TABLES.keys().next().value);
    return data.table;
  }
  const held = TABLES.get(data.table_id);
  if (held) return held;
  reports += 1;
  setStateValue("lacks", { id: data.table_id, n: reports }); // the next run sends it
  return null;
}

const escapeHtml = (text) =>
  String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

function cardHtml(card) {
  let delta = "";
  if (card.delta !== null && card.delta !== undefined) {
    const negative = /^\s*[-\u2212]/.test(card.delta);
    let tone = "neutral";
    let arrow = "";
    if (card.delta_color !== "off") {
      arrow = negative ? "\u2193 " : "\u2191 ";
      tone = (card.delta_color === "inverse" ? negative : !negative) ? "good" : "bad";
    }
    delta = `<div class="svc-delta svc-${tone}">${arrow}${escapeHtml(card.delta)}</div>`;
  }
  const help = card.help
    ? `<span class="svc-help" role="img" title="${escapeHtml(card.help)}" aria-label="${escapeHtml(card.help)}">?</span>`
    : "";
  return (
    `<div class="svc-card" data-card="${escapeHtml(card.label)}">` +
    `<div class="svc-label">${escapeHtml(card.label)}${help}</div>` +
    `<div class="svc-value">${escapeHtml(card.value)}</div>${delta}</div>`
  );
}

// One view of the table (ui/instant_cards.table_json): shared card fields plus this view's own.
function tableView(table, key) {
  const entry = key === undefined || !table ? undefined : table.views[key];
  if (!entry) return null;
  const cards = table.common.map((shared, i) => {
    const card = { ...shared };
    table.varying[i].forEach((field, j) => (card[field] = entry[0][i][j]));
    return card;
  });
  return { cards, caption: table.caption ?? entry[1] };
}

function viewHtml(view, where) {
  const caption = view.caption ? `<div class="svc-caption">${escapeHtml(view.caption.replace("{where}", where))}</div>` : "";
  return `<div class="svc-row">${view.cards.map(cardHtml).join("")}</div>${caption}`;
}

export default function ({ parentElement, data, setStateValue }) {
  let root = parentElement.querySelector(":scope > .svc-root");
  if (!root) {
    root = document.createElement("div");
    root.className = "svc-root";
    parentElement.appendChild(root);
  }
  root.style.setProperty("--svc-card-width", `${data.card_width}px`);
  // A run re-invokes this function without unmounting: the previous run's observers (and the table
  // their closures hold) must go now, not at their slider's next move (a leak of ~0.2 MB a move).
  (root.svcObservers || []).forEach((observer) => observer && observer.disconnect());
  const { view, link, missing } = data;
  const table = tableFor(data, setStateValue);
  const draw = (html, stale) => {
    if (root.svcHtml !== html) {
      root.innerHTML = html;
      root.svcHtml = html;
    }
    root.classList.toggle("svc-stale", stale);
  };
  const sliders = link.labels.map((label) =>
    document.querySelector(`input[type="range"][aria-label="${CSS.escape(label)}"]`),
  );
  const valueOf = (i) => (sliders[i] ? sliders[i].getAttribute("aria-valuetext") : link.shown[i]);
  let moved = null; // since the server's run: "overall" (both sliders follow the path) or "pair"
  const follow = () => {
    const now = [0, 1, 2].map(valueOf);
    if (moved === null) {
      if (now.every((value, i) => value === link.shown[i])) {
        draw(viewHtml(view, ""), false);
        return;
      }
      moved = now[0] !== link.shown[0] ? "overall" : "pair";
    }
    const key = moved === "overall" ? link.path[now[0]] : `${now[1]}|${now[2]}`;
    const [mlp, head] = (key || "?|?").split("|");
    const where = `(MLP ${mlp}, head ${head})`;
    const entry = tableView(table, key);
    if (entry) draw(viewHtml(entry, where), false);
    else if (missing) draw(viewHtml(missing, where), false);
    else root.classList.add("svc-stale"); // the server's run redraws them
  };
  const observers = sliders.map((slider, i) => {
    if (!slider) return null;
    const observer = new MutationObserver(() => {
      moved = i === 0 ? "overall" : "pair";
      follow();
    });
    observer.observe(slider, { attributes: true, attributeFilter: ["aria-valuetext"] });
    return observer;
  });
  root.svcObservers = observers;
  follow();
  return () => observers.forEach((observer) => observer && observer.disconnect());
}
