// The API reference: the endpoints of /openapi.json with their fields, answers and an example request.
"use strict";

function resolve(spec, schema) {
  while (schema && schema.$ref) schema = spec.components.schemas[schema.$ref.split("/").pop()];
  return schema || {};
}

function typeOf(spec, schema) {
  schema = resolve(spec, schema);
  if (schema.anyOf) return schema.anyOf.map((s) => typeOf(spec, s)).join(" or ");
  if (schema.type === "array") return `array of ${typeOf(spec, schema.items)}`;
  if (schema.title && schema.properties) return schema.title;
  return schema.type || "any";
}

function rules(schema) {
  const parts = [];
  if (schema.minimum !== undefined) parts.push(`>= ${schema.minimum}`);
  if (schema.maximum !== undefined) parts.push(`<= ${schema.maximum}`);
  const characters = (n) => `${n} character${n === 1 ? "" : "s"}`;
  if (schema.minLength !== undefined) parts.push(`at least ${characters(schema.minLength)}`);
  if (schema.maxLength !== undefined) parts.push(`at most ${characters(schema.maxLength)}`);
  if (schema.default !== undefined) parts.push(`default ${JSON.stringify(schema.default)}`);
  return parts.join(", ");
}

function fieldTable(spec, schema) {
  schema = resolve(spec, schema);
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  ["field", "type", "rules", "meaning"].forEach((name) => { const th = document.createElement("th"); th.textContent = name; head.append(th); });
  const required = new Set(schema.required || []);
  Object.entries(schema.properties || {}).forEach(([name, property]) => {
    const row = table.insertRow();
    const field = resolve(spec, property);
    [name + (required.has(name) ? " (required)" : ""), typeOf(spec, property), rules(field), field.description || ""]
      .forEach((text) => { row.insertCell().textContent = text; });
  });
  return table;
}

function section(title, child) {
  const wrap = document.createElement("div");
  const heading = document.createElement("h3");
  heading.textContent = title;
  wrap.append(heading, child);
  return wrap;
}

async function start() {
  const spec = await (await fetch("/openapi.json")).json();
  document.getElementById("api-title").textContent = `${spec.info.title} ${spec.info.version}: API reference`;
  const endpoints = document.getElementById("endpoints");
  Object.entries(spec.paths).forEach(([path, methods]) => {
    Object.entries(methods).forEach(([method, operation]) => {
      const box = document.createElement("section");
      box.className = "endpoint";
      const title = document.createElement("h2");
      const badge = document.createElement("span");
      badge.className = `method ${method}`;
      badge.textContent = method.toUpperCase();
      title.append(badge, " ", path);
      box.append(title);
      const params = (operation.parameters || []).map((p) => `${p.name} (${p.in}${p.required ? ", required" : ""})`);
      if (params.length) box.append(section("Parameters", document.createTextNode(params.join(", "))));
      const body = operation.requestBody && operation.requestBody.content;
      if (body && body["application/json"]) {
        box.append(section("Request body (JSON)", fieldTable(spec, body["application/json"].schema)));
        if (body["application/json"].example) {
          const pre = document.createElement("pre");
          pre.textContent = `curl -s ${location.origin}${path} -d '${JSON.stringify(body["application/json"].example)}'`;
          box.append(pre);
        }
      } else if (body) {
        box.append(section("Request body", document.createTextNode(Object.keys(body).join(", "))));
      }
      const answers = document.createElement("table");
      Object.entries(operation.responses || {}).forEach(([status, response]) => {
        const row = answers.insertRow();
        row.insertCell().textContent = status;
        row.insertCell().textContent = response.description || "";
        const content = response.content && response.content["application/json"];
        row.insertCell().textContent = content ? typeOf(spec, content.schema) : "";
      });
      box.append(section("Answers", answers));
      const ok = operation.responses && operation.responses["200"] && operation.responses["200"].content;
      const okSchema = ok && ok["application/json"] && resolve(spec, ok["application/json"].schema);
      if (okSchema && okSchema.properties) box.append(section(`${okSchema.title} fields`, fieldTable(spec, okSchema)));
      endpoints.append(box);
    });
  });
}

start().catch((error) => {
  document.getElementById("endpoints").textContent = `Could not read /openapi.json: ${error.message}`;
});
