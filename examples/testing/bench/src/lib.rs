//! Benchmark workflow. Input `{"steps": N}`: N sequential calls of the
//! trivial activity `noop.ping`. Input `{"park": true}`: wait for the
//! signal `go`, then return (for parked-run measurements).

use cairn_sdk::{ActivityOptions, Context, Failure, RetryPolicy};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Input {
    #[serde(default)]
    steps: u32,
    #[serde(default)]
    park: bool,
}

fn bench(ctx: &Context, input: Input) -> Result<Value, Failure> {
    if input.park {
        let go: Value = ctx.signal("go").get()?;
        return Ok(json!({ "go": go }));
    }
    let options = ActivityOptions::default().retry(RetryPolicy::none());
    let mut last = Value::Null;
    for i in 0..input.steps {
        last = ctx.activity_with("noop.ping", &json!({ "i": i }), &options).get()?;
    }
    Ok(json!({ "steps": input.steps, "last": last }))
}

cairn_sdk::workflow!(bench);
