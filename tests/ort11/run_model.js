// Loads one ONNX model in ONNX Runtime 1.11.0 (npm onnxruntime-node@1.11.0 carries that release's own
// libonnxruntime.so.1.11.0: the runtime inside RedisAI 1.2.7) and, given a tensor, runs it.
//
//   node run_model.js MODEL.onnx                  load only
//   node run_model.js MODEL.onnx TENSOR ROWS COLS  load, then run on a float32 tensor (raw little-endian
//                                                  bytes, row-major: what AI.TENSORSET ... BLOB sends)
//
// Prints one JSON object: {"runtime", "library", "loaded": true, "inputs", "outputs": {name: {dims, data}}},
// or {"runtime", "library", "loaded": false, "error"} when the runtime refuses the model (exit 0: a refusal
// is an answer). Exit 2 on wrong arguments; any other failure is a crash with a non-zero exit.
// tests/helpers/ort11.py is the only caller.
"use strict";

const fs = require("fs");
const path = require("path");
const ort = require("onnxruntime-node");

const runtime = require("onnxruntime-node/package.json").version;
const binDir = path.join(path.dirname(require.resolve("onnxruntime-node/package.json")), "bin", "napi-v3", process.platform, process.arch);
const library = fs.readdirSync(binDir).find((name) => name.startsWith("libonnxruntime")) || null;

async function main(argv) {
  if (argv.length !== 1 && argv.length !== 4) {
    process.stderr.write("usage: node run_model.js MODEL.onnx [TENSOR ROWS COLS]\n");
    process.exit(2);
  }
  const [modelPath, tensorPath, rowsText, colsText] = argv;
  let session;
  try {
    // One thread, as RedisAI runs in compose and k8s (INTRA_OP_PARALLELISM 1).
    session = await ort.InferenceSession.create(modelPath, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  } catch (error) {
    return { runtime, library, loaded: false, error: String(error && error.message ? error.message : error) };
  }
  const answer = { runtime, library, loaded: true, inputs: session.inputNames, outputs: {} };
  if (tensorPath === undefined) return answer;

  const rows = Number(rowsText);
  const cols = Number(colsText);
  const bytes = fs.readFileSync(tensorPath);
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || bytes.length !== rows * cols * 4) {
    throw new Error(`tensor of ${bytes.length} bytes is not ${rows} x ${cols} float32`);
  }
  // Copied into an aligned buffer: a Buffer's offset into Node's pool need not be a multiple of 4.
  const data = new Float32Array(rows * cols);
  new Uint8Array(data.buffer).set(bytes);
  // RedisAI binds its INPUTS to the model's inputs by position: the tensor goes to the first one.
  const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", data, [rows, cols]) };
  const results = await session.run(feeds);
  for (const name of session.outputNames) {
    answer.outputs[name] = { dims: results[name].dims, data: Array.from(results[name].data) };
  }
  return answer;
}

main(process.argv.slice(2)).then(
  (answer) => process.stdout.write(JSON.stringify(answer) + "\n"),
  (error) => {
    process.stderr.write(`${error && error.stack ? error.stack : error}\n`);
    process.exit(1);
  },
);
