// The explorer's live layer (ui/instant_cards.py): the metric cards and the marks over the charts. Each
// mount draws what the server sent for its configuration, then follows the sliders: when a slider's value
// changes, the cards or marks of the new configuration come from the table the server sent with them, at
// once, with no round trip. Python formats every value and sends each chart's geometry
// (ui/chart_overlay.py); this only chooses what to show and places the marks.

// The tables this page got, by id: the server sends each table to a session once, then only its id
// (ui/instant_cards.must_send_table). A few are kept (cost, kNN and marks tables, of this and the last scores).
const TABLES = new Map();
const TABLES_KEPT = 10;
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

// ---- the sliders: one set of observers for every mount, each mount following them ----------------------

// mount root -> its follow(slider index): a run re-invokes a mount without unmounting, and its new follow
// replaces the old one (whose closure holds the previous run's tables) at once.
const FOLLOWERS = new Map();
let watched = []; // per slider: {slider, observer} or null (not on the page)

function watchSliders(labels) {
  const sliders = labels.map((label) =>
    document.querySelector(`input[type="range"][aria-label="${CSS.escape(label)}"]`),
  );
  if (sliders.every((slider, i) => (watched[i] ? watched[i].slider : null) === slider)) return;
  unwatch();
  watched = sliders.map((slider, i) => {
    if (!slider) return null;
    const observer = new MutationObserver(() => FOLLOWERS.forEach((follow) => follow(i)));
    observer.observe(slider, { attributes: true, attributeFilter: ["aria-valuetext"] });
    return { slider, observer };
  });
}

function unwatch() {
  watched.forEach((entry) => entry && entry.observer.disconnect());
  watched = [];
}

// The sliders' printed values ('%.2f', as the server's grid keys hold them); link.shown where one is missing.
const sliderValues = (link) =>
  [0, 1, 2].map((i) => (watched[i] ? watched[i].slider.getAttribute("aria-valuetext") : link.shown[i]));

// Follows the sliders for one mount: draw(null) = the server's own configuration; draw(key) = the grid key
// the sliders name now (the overall slider's path point, or the MLP and head sliders' pair).
function follower(link, draw) {
  let moved = null; // since the server's run: "overall" (both sliders follow the path) or "pair"
  return (changed) => {
    if (changed !== undefined) moved = changed === 0 ? "overall" : "pair";
    const now = sliderValues(link);
    if (moved === null) {
      if (now.every((value, i) => value === link.shown[i])) return draw(null);
      moved = now[0] !== link.shown[0] ? "overall" : "pair";
    }
    return draw(moved === "overall" ? link.path[now[0]] : `${now[1]}|${now[2]}`);
  };
}

// ---- cards ----------------------------------------------------------------------------------------------

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

function cardsFollower(root, data, table) {
  const { view, link, missing } = data;
  return follower(link, (key) => {
    if (key === null) return root.svcDraw(viewHtml(view, ""), false);
    const [mlp, head] = (key || "?|?").split("|");
    const where = `(MLP ${mlp}, head ${head})`;
    const entry = tableView(table, key);
    if (entry) root.svcDraw(viewHtml(entry, where), false);
    else if (missing) root.svcDraw(viewHtml(missing, where), false);
    else root.classList.add("svc-stale"); // the server's run redraws them
  });
}

// ---- marks over a chart ---------------------------------------------------------------------------------

// Where data coordinates land over a chart of fixed geometry (ui/chart_overlay.PlotArea): plotly's plot
// area spans the container's width less the left and right margins (so x is a CSS length that follows the
// container's width) and the figure's fixed height less the top and bottom margins (y in px).
export function placeX(area, x) {
  const [low, high] = area.x_range;
  const fraction = (x - low) / (high - low);
  return `calc(${area.margin.l}px + ${fraction.toFixed(6)} * (100% - ${area.margin.l + area.margin.r}px))`;
}

export function placeY(area, y) {
  const [bottom, top] = area.y_range;
  const inner = area.height - area.margin.t - area.margin.b;
  return area.margin.t + ((top - y) / (top - bottom)) * inner;
}

const STAR_POINTS = "12,1 15,9 23,9 17,14 19,23 12,18 5,23 7,14 1,9 9,9";

// An SVG shape (drawn in a view x view box), size px across, centred on data (x, y).
function centredSvg(area, x, y, size, cssClass, view, shape) {
  return (
    `<div class="${cssClass}" data-x="${x.toFixed(4)}" data-y="${y.toFixed(4)}" style="position:absolute;` +
    `left:${placeX(area, x)};top:${placeY(area, y).toFixed(2)}px;width:${size}px;height:${size}px;` +
    `transform:translate(-50%,-50%)"><svg width="${size}" height="${size}" viewBox="0 0 ${view} ${view}">` +
    `${shape}</svg></div>`
  );
}

const starMark = (area, x, y, colour, size, cssClass) =>
  centredSvg(area, x, y, size, cssClass, 24,
    `<polygon points="${STAR_POINTS}" fill="${colour}" stroke="black" stroke-width="1.2"/>`); // prettier-ignore

const crossMark = (area, x, y, colour, size, cssClass) =>
  centredSvg(area, x, y, size, cssClass, 14,
    `<path d="M2 2L12 12M12 2L2 12" stroke="${colour}" stroke-width="3" stroke-linecap="round"/>`); // prettier-ignore

// A vertical line width px wide centred on data x, from data y yFrom to yTo.
function verticalBar(area, x, yFrom, yTo, colour, width, cssClass) {
  const [top, bottom] = [placeY(area, yFrom), placeY(area, yTo)].sort((a, b) => a - b);
  return (
    `<div class="${cssClass}" data-x="${x.toFixed(4)}" style="position:absolute;left:${placeX(area, x)};` +
    `top:${top.toFixed(2)}px;width:${width}px;height:${(bottom - top).toFixed(2)}px;background:${colour};` +
    `transform:translateX(-50%)"></div>`
  );
}

// A filled rectangle over data x0..x1, y0..y1 (a bar) that shows tooltip on hover (the browser's own
// tooltip: nothing to redraw), so it takes pointer events.
function boxMark(area, [x0, x1], [y0, y1], colour, cssClass, tooltip) {
  const [low, high] = area.x_range;
  const width = (x1 - x0) / (high - low);
  const upper = placeY(area, y0) < placeY(area, y1) ? y0 : y1; // the data y of its top edge
  const [top, bottom] = [placeY(area, y0), placeY(area, y1)].sort((a, b) => a - b);
  return (
    `<div class="${cssClass}" data-x="${((x0 + x1) / 2).toFixed(4)}" data-top="${upper.toFixed(4)}" ` +
    `title="${escapeHtml(tooltip)}" style="position:absolute;pointer-events:auto;left:${placeX(area, x0)};` +
    `top:${top.toFixed(2)}px;width:calc(${width.toFixed(6)} * (100% - ${area.margin.l + area.margin.r}px));` +
    `height:${(bottom - top).toFixed(2)}px;background:${colour}"></div>`
  );
}

// A chart's title line that changes with the configuration, at the figure's top left where plotly puts one.
const titleMark = (text, cssClass) =>
  `<div class="${cssClass}" style="position:absolute;left:4px;top:12px;line-height:1.3;font-size:16px;` +
  `font-weight:600;white-space:nowrap">${escapeHtml(text)}</div>`;

const fill = (template, values) => template.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? values[name] : whole));

// The marks of one chart (ui/chart_overlay.ChartMarks) at one configuration (ui/chart_overlay.MarkView),
// in one element laid over the chart that takes no pointer events, so hover and clicks reach the chart.
export function overlayHtml(chart, marks) {
  const { area, style } = chart;
  const parts = [];
  if (chart.kind === "star") {
    parts.push(starMark(area, marks.at[0], marks.at[1], style.colour, style.size, style.class));
  } else if (chart.kind === "heads") {
    parts.push(titleMark(marks.heads_title, style.title_class));
    marks.pruned_heads.forEach((heads, block) =>
      heads.forEach((head) => parts.push(crossMark(area, head, block, style.colour, style.size, style.class))),
    );
  } else if (chart.kind === "bars") {
    parts.push(titleMark(marks.neurons_title, style.title_class));
    marks.kept_neurons.forEach((kept, block) => {
      const x = [block - style.half_width, block + style.half_width];
      const pruned = style.hidden - kept;
      parts.push(boxMark(area, x, [0, kept], style.kept_colour, style.kept_class, fill(style.kept_tip, { block, count: kept })));
      parts.push(
        boxMark(area, x, [kept, style.hidden], style.pruned_colour, style.pruned_class,
          fill(style.pruned_tip, { block, count: pruned })), // prettier-ignore
      );
    });
  } else if (chart.kind === "boundaries") {
    marks.kept_neurons.forEach((kept, block) =>
      parts.push(verticalBar(area, kept - 0.5, block - 0.5, block + 0.5, style.colour, style.width, style.class)),
    );
  }
  return (
    `<div class="chart-overlay" style="position:absolute;left:0;top:0;width:100%;height:${area.height}px;` +
    `pointer-events:none;z-index:2;line-height:0">${parts.join("")}</div>`
  );
}

// The marks a table (ui/instant_cards.marks_table) holds for a grid key, as the server's MarkView.
function tableMarks(table, key) {
  const entry = key === undefined || !table ? undefined : table.views[key];
  if (!entry) return null;
  const [mlp, head, kept, pruned] = entry;
  const [keptNeurons, neuronsTitle] = table.neurons[kept];
  const [prunedHeads, headsTitle] = table.heads[pruned];
  return {
    at: [mlp, head],
    kept_neurons: keptNeurons,
    pruned_heads: prunedHeads,
    neurons_title: neuronsTitle,
    heads_title: headsTitle,
  };
}

function marksFollower(root, data, table) {
  return follower(data.link, (key) => {
    const marks = key === null ? data.marks : tableMarks(table, key);
    if (marks) root.svcDraw(overlayHtml(data.chart, marks), false); // else the server's run draws them
  });
}

// ---- the component ----------------------------------------------------------------------------------------

export default function ({ parentElement, data, setStateValue }) {
  let root = parentElement.querySelector(":scope > .svc-root");
  if (!root) {
    root = document.createElement("div");
    root.className = "svc-root";
    parentElement.appendChild(root);
    root.svcDraw = (html, stale) => {
      if (root.svcHtml !== html) {
        root.innerHTML = html;
        root.svcHtml = html;
      }
      root.classList.toggle("svc-stale", stale);
    };
  }
  if (data.card_width !== undefined) root.style.setProperty("--svc-card-width", `${data.card_width}px`);
  const table = tableFor(data, setStateValue);
  watchSliders(data.link.labels);
  const follow = data.chart ? marksFollower(root, data, table) : cardsFollower(root, data, table);
  FOLLOWERS.set(root, follow);
  follow();
  return () => {
    if (FOLLOWERS.get(root) === follow) FOLLOWERS.delete(root);
    if (FOLLOWERS.size === 0) unwatch();
  };
}
