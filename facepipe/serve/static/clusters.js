// facepipe web page, "People to name": each cluster as a grid of faces with a name box (uses app.js's call()).
"use strict";
const MAX_FACES_SHOWN = 24;

async function faceImage(faceId) {
  // the faces need the API key too: fetch them and show them as blob: URLs (the page's CSP allows those)
  const headers = keyInput.value ? { Authorization: "Bearer " + keyInput.value } : {};
  const response = await fetch(`/v1/clusters/faces/${faceId}.jpg`, { headers });
  if (!response.ok) throw new Error(`face ${faceId}: ${response.status}`);
  return URL.createObjectURL(await response.blob());
}

function clusterCard(cluster) {
  const card = document.createElement("article");
  card.className = "cluster";
  card.dataset.cluster = cluster.cluster;
  const title = document.createElement("h3");
  title.textContent = `Cluster ${cluster.cluster} · ${cluster.faces} face${cluster.faces === 1 ? "" : "s"}`;
  const grid = document.createElement("div");
  grid.className = "grid";
  for (const faceId of cluster.face_ids.slice(0, MAX_FACES_SHOWN)) {
    const img = document.createElement("img");
    img.alt = `face ${faceId}`;
    img.title = `face ${faceId}: click to take it out of this group`;
    img.width = img.height = 84;
    img.dataset.face = faceId;
    faceImage(faceId).then((url) => { img.src = url; }).catch(() => img.classList.add("missing"));
    img.addEventListener("click", () => splitOut(cluster.cluster, faceId));
    grid.append(img);
  }
  const form = document.createElement("form");
  const input = Object.assign(document.createElement("input"), { required: true, maxLength: 100, placeholder: "Who is this?" });
  input.className = "cluster-name";
  const button = Object.assign(document.createElement("button"), { type: "submit", textContent: "Name" });
  form.append(input, button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = input.value.trim();
    if (!name) return;
    try {
      const result = await call("POST", `/v1/clusters/${cluster.cluster}/name`, jsonBody({ name }));
      setStatus(`Cluster ${cluster.cluster} is now ${result.person} (${result.enrolled_faces} faces enrolled).`);
      await Promise.all([refreshClusters(), refreshPersons()]);
    } catch (error) {
      setStatus(error.message, true);
    }
  });
  card.append(title, grid, form);
  return card;
}

function jsonBody(value) {
  return new Blob([JSON.stringify(value)], { type: "application/json" });
}

async function splitOut(clusterId, faceId) {
  try {
    await call("POST", `/v1/clusters/${clusterId}/split`, jsonBody({ faces: [faceId] }));
    setStatus(`Face ${faceId} taken out of cluster ${clusterId}; it will not come back to it.`);
    await refreshClusters();
  } catch (error) {
    setStatus(error.message, true);
  }
}

async function refreshClusters() {
  const list = $("cluster-list");
  try {
    const { clusters } = await call("GET", "/v1/clusters");
    list.replaceChildren(...clusters.map(clusterCard));
    if (!clusters.length) {
      list.replaceChildren(Object.assign(document.createElement("p"), {
        className: "notice", textContent: "No unnamed groups: run `facepipe cluster PATH...` on the server's photos." }));
    }
    document.body.dataset.clusters = String(clusters.length);
  } catch (error) {
    list.replaceChildren(Object.assign(document.createElement("p"), { className: "notice error", textContent: error.message }));
  }
}

$("refresh-clusters").addEventListener("click", refreshClusters);
keyInput.addEventListener("change", refreshClusters);
refreshClusters();
