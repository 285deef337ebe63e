//! The order resources run in: every resource after the ones it names in `after`, otherwise in
//! the document's order. Unknown names and cycles are refused before anything runs.

use super::document::Resource;

/// Indexes into `resources` in the order to run them.
pub fn order(resources: &[Resource]) -> Result<Vec<usize>, String> {
    let index = |name: &str| resources.iter().position(|r| r.name == name);
    let mut deps: Vec<Vec<usize>> = Vec::with_capacity(resources.len());
    for r in resources {
        let mut mine = Vec::new();
        for name in &r.after {
            match index(name) {
                Some(i) if resources[i].name == r.name => {
                    return Err(format!("resource '{}' comes after itself", r.name));
                }
                Some(i) => mine.push(i),
                None => {
                    return Err(format!(
                        "resource '{}' comes after '{}', which is not in the document",
                        r.name,
                        name.escape_default()
                    ));
                }
            }
        }
        deps.push(mine);
    }
    let mut done = vec![false; resources.len()];
    let mut order = Vec::with_capacity(resources.len());
    while order.len() < resources.len() {
        // The first resource in document order whose dependencies are all done.
        let next = (0..resources.len()).find(|&i| !done[i] && deps[i].iter().all(|&d| done[d]));
        match next {
            Some(i) => {
                done[i] = true;
                order.push(i);
            }
            None => return Err(describe_cycle(resources, &deps, &done)),
        }
    }
    Ok(order)
}

/// "a -> b -> a": one cycle among the resources not done.
fn describe_cycle(resources: &[Resource], deps: &[Vec<usize>], done: &[bool]) -> String {
    let start = (0..resources.len()).find(|&i| !done[i]).unwrap_or(0);
    let mut path = vec![start];
    let mut at = start;
    while let Some(&next) = deps[at].iter().find(|&&d| !done[d]) {
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let cycle: Vec<&str> = path[pos..]
                .iter()
                .chain(std::iter::once(&next))
                .map(|&i| resources[i].name.as_str())
                .collect();
            return format!(
                "the resources' \"after\" lists form a cycle: {}",
                cycle.join(" -> ")
            );
        }
        path.push(next);
        at = next;
    }
    "the resources' \"after\" lists form a cycle".into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestd_core::configure::{GroupSpec, ResourceSpec};

    fn r(name: &str, after: &[&str]) -> Resource {
        Resource {
            name: name.into(),
            after: after.iter().map(|s| s.to_string()).collect(),
            spec: ResourceSpec::Group(GroupSpec::default()),
        }
    }

    #[test]
    fn dependencies_first_then_document_order() {
        let rs = [
            r("a", &["c"]),
            r("b", &[]),
            r("c", &[]),
            r("d", &["a", "b"]),
        ];
        assert_eq!(order(&rs).unwrap(), [1, 2, 0, 3]);
        let independent = [r("x", &[]), r("y", &[]), r("z", &[])];
        assert_eq!(order(&independent).unwrap(), [0, 1, 2]);
    }

    #[test]
    fn cycles_and_unknown_names_are_refused() {
        let rs = [r("a", &["b"]), r("b", &["c"]), r("c", &["a"]), r("d", &[])];
        assert_eq!(
            order(&rs).unwrap_err(),
            "the resources' \"after\" lists form a cycle: a -> b -> c -> a"
        );
        assert_eq!(
            order(&[r("a", &["a"])]).unwrap_err(),
            "resource 'a' comes after itself"
        );
        assert_eq!(
            order(&[r("a", &["nope"])]).unwrap_err(),
            "resource 'a' comes after 'nope', which is not in the document"
        );
    }
}
