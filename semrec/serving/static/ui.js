// Small DOM helpers and the product card. Text from the catalog only ever goes in as text
// (textContent), never as HTML.

import { loadImage } from "./api.js";

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function productHref(id) {
  return `#/product/${encodeURIComponent(id)}`;
}

export function price(value) {
  return typeof value === "number" ? `$${value.toFixed(2)}` : "";
}

// The product's picture, or a labelled placeholder when it has none.
export function picture(item, size = "card") {
  const label = item.title || item.product_id;
  if (!item.image_url) {
    return h("div", { class: `img placeholder img-${size}`, role: "img",
                      "aria-label": `No image for ${label}` }, "no image");
  }
  const img = h("img", { class: `img img-${size}`, alt: label, width: 160, height: 160,
                         decoding: "async" });
  loadImage(img, item.image_url);
  return img;
}

export function stockBadge(item) {
  if (item.in_stock === undefined || item.in_stock === null) return null;
  return item.in_stock
    ? h("span", { class: "badge in" }, "In stock")
    : h("span", { class: "badge out" }, "Out of stock");
}

// One product card; ``extra`` nodes go at the bottom (e.g. "because you bought").
export function card(item, extra = []) {
  const href = productHref(item.product_id);
  return h("article", { class: "card", "data-product": item.product_id },
    h("a", { href, tabindex: "-1", "aria-hidden": "true", class: "pic" }, picture(item)),
    h("h3", {}, h("a", { href }, item.title || item.product_id)),
    h("p", { class: "meta" },
      item.category ? h("span", { class: "category" }, item.category) : null,
      item.price !== undefined ? h("span", { class: "price" }, price(item.price)) : null),
    stockBadge(item),
    extra);
}

export function grid(items, extra = () => []) {
  if (!items.length) return h("p", { class: "muted empty" }, "Nothing matches.");
  return h("div", { class: "grid results" }, items.map((item) => card(item, extra(item))));
}

export function showError(error) {
  const alert = document.getElementById("alert");
  alert.textContent = error ? String(error.message || error) : "";
  alert.hidden = !error;
}

// Mark the moment results first reach the DOM (read by bench/storefront.py).
export function markResults() {
  if (!performance.getEntriesByName("semrec:results").length) {
    performance.mark("semrec:results");
  }
}
