//! Imports `acme:db/query`, which no Cairn host provides.

wit_bindgen::generate!({ path: "wit", world: "rogue" });

struct Rogue;

impl Guest for Rogue {
    fn run(input: String) -> Result<String, String> {
        Ok(acme::db::query::run(&input))
    }
}

export!(Rogue);
