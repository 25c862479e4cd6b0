// Validates KEDA ScaledObjects and TriggerAuthentications with the schema packaged in the npm package
// @kubernetes-models/keda (installed by scripts/setup_chart_tools.sh).
//
//   node keda_validate.mjs <path to node_modules/@kubernetes-models/keda> < objects.json
//
// Two checks per object:
//  1. the package's compiled JSON-schema validator (types, required fields,
//     enums), generated from KEDA's Go API types;
//  2. unknown fields: that validator allows extra properties, so the field
//     names are checked against the interfaces the package declares
//     (keda.sh/v1alpha1/*.d.ts), like `kubectl --validate=strict` would.
//     Kubernetes types (ObjectMeta, HPA behavior) are checked by the Python
//     side against Kubernetes' own schemas.
// Prints one line per problem; exit status 1 when there is any.

import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const pkg = process.argv[2];
if (!pkg) {
  console.error("usage: keda_validate.mjs <@kubernetes-models/keda dir>");
  process.exit(2);
}
const apiDir = join(pkg, "keda.sh", "v1alpha1");

// --- interfaces from the .d.ts files -------------------------------------
// interface name (e.g. IScaledObjectSpec) -> {prop: typeText}
const interfaces = new Map();
for (const file of readdirSync(apiDir)) {
  if (!file.endsWith(".d.ts")) continue;
  const text = readFileSync(join(apiDir, file), "utf8");
  const re = /export interface (I\w+)(?: extends [^{]+)? \{\n([\s\S]*?)\n\}/g;
  let m;
  while ((m = re.exec(text)) !== null) {
    const props = {};
    // Top-level members are indented by 4 spaces; a member ends at ";" when
    // the braces/angle brackets opened in it are closed.
    let name = null;
    let type = "";
    let depth = 0;
    for (const line of m[2].split("\n")) {
      if (name === null) {
        const pm = /^ {4}"([^"]+)"\??: (.*)$/.exec(line);
        if (!pm) continue;
        name = pm[1];
        type = pm[2];
      } else {
        type += " " + line.trim();
      }
      depth = (type.match(/[{<]/g) || []).length - (type.match(/[}>]/g) || []).length;
      if (depth === 0 && type.trimEnd().endsWith(";")) {
        props[name] = type.trim().replace(/;$/, "");
        name = null;
      }
    }
    interfaces.set(m[1], props);
  }
}

const KEDA_PREFIX = "IComGithubKedacoreKedaV2ApisKedaV1alpha1";

function interfaceFor(typeName) {
  if (!typeName.startsWith(KEDA_PREFIX)) return null; // not a KEDA type
  return interfaces.get("I" + typeName.slice(KEDA_PREFIX.length)) ?? null;
}

function checkUnknown(value, props, path, problems) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return;
  for (const [key, child] of Object.entries(value)) {
    if (!(key in props)) {
      problems.push(`${path}: unknown field "${key}"`);
      continue;
    }
    let type = props[key];
    const arr = /^Array<(\w+)>$/.exec(type);
    if (arr) {
      const inner = interfaceFor(arr[1]);
      if (inner && Array.isArray(child)) {
        child.forEach((item, i) => checkUnknown(item, inner, `${path}.${key}[${i}]`, problems));
      }
      continue;
    }
    const inner = interfaceFor(type);
    if (inner) checkUnknown(child, inner, `${path}.${key}`, problems);
  }
}

// --- main ------------------------------------------------------------------
// The kinds the chart renders: their compiled validator and their top interface.
const KINDS = {};
for (const kind of ["ScaledObject", "TriggerAuthentication"]) {
  const url = pathToFileURL(join(pkg, "_schemas", `${KEDA_PREFIX.slice(1)}${kind}.js`)).href;
  KINDS[kind] = { validate: (await import(url)).validate, top: interfaces.get(`I${kind}`) };
}

const objects = JSON.parse(readFileSync(0, "utf8"));
const problems = [];
for (const obj of objects) {
  const where = `${obj.kind}/${obj.metadata?.name}`;
  const known = KINDS[obj.kind];
  if (!known || obj.apiVersion !== "keda.sh/v1alpha1") {
    problems.push(`${where}: not a keda.sh/v1alpha1 ${Object.keys(KINDS).join(" or ")}`);
    continue;
  }
  const { validate, top } = known;
  if (!validate(obj)) {
    for (const err of validate.errors ?? []) {
      problems.push(`${where}: ${err.instancePath || "/"} ${err.keyword} ${JSON.stringify(err.params)}`);
    }
  }
  if (!top) {
    problems.push(`I${obj.kind} interface not found in the package`);
    continue;
  }
  checkUnknown(obj, top, where, problems);
}
for (const p of problems) console.log(p);
process.exit(problems.length ? 1 : 0);
