//! The `steps` workflow, variant: Renamed.
fn run(ctx: &cairn_sdk::Context, input: serde_json::Value) -> Result<serde_json::Value, cairn_sdk::Failure> {
    steps::run(ctx, input, steps::Variant::Renamed)
}
cairn_sdk::workflow!(run);
