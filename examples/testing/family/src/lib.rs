//! Test workflow for child runs: starts one `hello` child per name and
//! collects their results (a child failure is reported, not raised).
//! Input: `["Ada", "Grace"]`.

use cairn_sdk::{Context, Failure};
use serde_json::{json, Value};

fn family(ctx: &Context, names: Vec<String>) -> Result<Value, Failure> {
    let children: Vec<_> = names.iter().map(|name| ctx.child::<_, Value>("hello", &json!({ "name": name }))).collect();
    let results: Vec<Value> = children
        .iter()
        .map(|child| match child.get() {
            Ok(v) => v,
            Err(f) => json!({ "failed": f.kind }),
        })
        .collect();
    Ok(Value::Array(results))
}

cairn_sdk::workflow!(family);
