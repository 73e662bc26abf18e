/*
 * function_1 (id "id_1") in JavaScript: the client half of the Layotto FaaS demo, as a component.
 *
 *   python scripts/build_components.py   # -> examples/functions-components/function_1.wasm
 *   curl -H 'id: id_1' 'localhost:2045/?name=book1'
 *   -> There are 100 inventories for book1.
 *
 * Reads `name` from the form-encoded body, or from the query string when there is no body, asks
 * function id_2 (in any language) for the stock of that book and answers with a sentence, as
 * examples/functions/function_1.c does.
 */
import { invoke, log } from "wasm-faas:function/runtime@0.1.0";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function text(status, body) {
  return { status, headers: [["content-type", "text/plain"]], body: encoder.encode(body) };
}

function nameOf(request) {
  const query = request.path.includes("?") ? request.path.slice(request.path.indexOf("?") + 1) : "";
  const form = request.body.length > 0 ? decoder.decode(request.body) : query;
  return new URLSearchParams(form).get("name") ?? "";
}

// A runtime call that fails throws; its `payload` is the world's error: { tag: "not-found", val: "..." }.
function reason(error) {
  return error && error.payload ? `${error.payload.tag}: ${error.payload.val}` : String(error);
}

export const identity = {
  functionId() {
    return "id_1";
  },
};

export const handler = {
  handle(request) {
    const name = nameOf(request);
    if (!name) {
      return text(400, "missing query parameter 'name'\n");
    }
    let stock;
    try {
      stock = invoke("id_2", "", encoder.encode(name));
    } catch (error) {
      log("error", `invoke id_2 failed: ${reason(error)}`);
      return text(502, `invoke id_2 failed: ${reason(error)}\n`);
    }
    return text(200, `There are ${decoder.decode(stock)} inventories for ${name}.`);
  },
};
