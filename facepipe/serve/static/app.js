// facepipe web page: pick or drop a photo, see its faces named, enroll one. No libraries, no network but this server.
"use strict";
const $ = (id) => document.getElementById(id);
let photo = null;   // the File being shown
let bitmap = null;  // the same photo, upright (the browser applies EXIF like the server does)

const keyInput = $("key");
keyInput.value = sessionStorage.getItem("facepipe-key") || "";
keyInput.addEventListener("change", () => { sessionStorage.setItem("facepipe-key", keyInput.value); refreshPersons(); });

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

// What a 401 means to the person at the page: a key is needed, or the one typed is not it.
function keyAdvice() {
  return keyInput.value ? "This API key is not accepted: check the key at the top right."
                        : "This server needs an API key: enter it at the top right.";
}

// A line in a list that says why it is empty (no one yet, or the server's answer): not an entry of the list.
function notice(text, isError = false) {
  const item = document.createElement("li");
  item.className = isError ? "notice error" : "notice";
  item.textContent = text;
  return item;
}

async function call(method, path, body) {
  const headers = keyInput.value ? { Authorization: "Bearer " + keyInput.value } : {};
  const response = await fetch(path, { method, headers, body });
  let data = {};
  try { data = await response.json(); } catch (e) { /* empty body */ }
  if (!response.ok) {
    const why = response.status === 401 ? keyAdvice() : (data.error || response.statusText);
    const error = new Error(why + (data.error_id ? " (error id " + data.error_id + ")" : ""));
    error.status = response.status;
    throw error;
  }
  return data;
}

// identify, or (the gallery refuses because it is still empty) detect: every face is unknown then
async function findFaces() {
  try {
    return { ...(await call("POST", "/v1/identify", imageForm())), empty: false };
  } catch (error) {
    if (error.status !== 409 || (await call("GET", "/v1/gallery")).faces !== 0) throw error;
    const result = await call("POST", "/v1/detect", imageForm());
    result.faces.forEach((f) => Object.assign(f, { identity: null, similarity: null, candidates: [] }));
    return { ...result, empty: true };
  }
}

function imageForm() {
  const form = new FormData();
  form.append("image", photo, photo.name || "photo.jpg");
  return form;
}

function draw(faces) {
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  canvas.width = bitmap.width; canvas.height = bitmap.height; canvas.hidden = false;
  ctx.drawImage(bitmap, 0, 0);
  const line = Math.max(2, Math.round(Math.max(bitmap.width, bitmap.height) / 300));
  ctx.lineWidth = line;
  ctx.font = `bold ${line * 8}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  for (const face of faces) {
    const [x1, y1, x2, y2] = face.box;
    const known = face.identity !== null;
    ctx.strokeStyle = known ? "#1e9e4a" : "#d93025";
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = known ? `${face.identity} ${face.similarity.toFixed(2)}` : "unknown";
    const width = ctx.measureText(label).width + line * 2;
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillRect(x1 - line / 2, y1 - line * 9, width, line * 9);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x1 + line / 2, y1 - line / 2);
  }
}

function listFaces(faces) {
  const list = $("faces");
  list.replaceChildren(...faces.map((face) => {
    const item = document.createElement("li");
    item.className = face.identity !== null ? "known" : "unknown";
    const best = face.candidates.length ? ` (closest: ${face.candidates[0].identity} ${face.candidates[0].similarity.toFixed(2)})` : "";
    item.textContent = face.identity !== null ? `${face.identity}, similarity ${face.similarity.toFixed(2)}` : "unknown" + best;
    return item;
  }));
}

async function identify() {
  document.body.dataset.state = "working";
  setStatus("Looking for faces…");
  try {
    const result = await findFaces();
    if (bitmap) draw(result.faces);
    listFaces(result.faces);
    const named = result.faces.filter((f) => f.identity !== null).length;
    setStatus(!result.faces.length ? "No face found in this photo."
              : result.empty ? `${result.faces.length} face(s); the gallery is empty: enroll one below.`
              : `${result.faces.length} face(s), ${named} named.`);
    $("enroll-button").disabled = result.faces.length === 0;
    document.body.dataset.state = "identified";
  } catch (error) {
    setStatus(error.message, true);
    document.body.dataset.state = "error";
  }
}

async function show(file) {
  photo = file;
  try {
    bitmap = await createImageBitmap(file);
  } catch (e) {
    bitmap = null; // the browser cannot show it; the server still says why it cannot read it
  }
  if (bitmap) draw([]);
  $("faces").replaceChildren();
  await identify();
}

async function refreshPersons() {
  try {
    const { persons } = await call("GET", "/v1/persons");
    $("persons").replaceChildren(...persons.map((p) => {
      const item = document.createElement("li");
      item.textContent = `${p.name} (${p.faces} face${p.faces === 1 ? "" : "s"})`;
      return item;
    }));
    if (!persons.length) $("persons").replaceChildren(notice("No one enrolled yet: enroll a photo above."));
  } catch (error) {
    $("persons").replaceChildren(notice(error.message, true));
  }
}

$("enroll").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("name").value.trim();
  if (!photo || !name) return;
  document.body.dataset.state = "working";
  try {
    const result = await call("POST", `/v1/persons/${encodeURIComponent(name)}/faces`, imageForm());
    await refreshPersons();
    await identify();
    setStatus(result.status === "added" ? `Enrolled as ${name}. ` + $("status").textContent
                                        : `This photo is already enrolled. ` + $("status").textContent);
  } catch (error) {
    setStatus(error.message, true);
    document.body.dataset.state = "error";
  }
});

$("file").addEventListener("change", (event) => { if (event.target.files[0]) show(event.target.files[0]); });
$("refresh").addEventListener("click", refreshPersons);
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files[0]) show(event.dataTransfer.files[0]);
});
refreshPersons();
