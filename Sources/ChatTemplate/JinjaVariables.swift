// MARK: - Variables a template reads

extension JinjaNode {
    /// Adds every variable name this node's expressions read (`{{ x }}`, `x.y`, `x is defined`)
    /// to `names`. Names the template only assigns are included when it also reads them, which is
    /// what `ChatTemplate.reads` needs: whether a context variable can change the render.
    func collectVariables(into names: inout Set<String>) {
        switch self {
        case .text, .breakLoop, .continueLoop: return
        case .output(let e, _): e.collectVariables(into: &names)
        case .conditional(let branches, let otherwise, _):
            for b in branches {
                b.condition.collectVariables(into: &names)
                for n in b.body { n.collectVariables(into: &names) }
            }
            for n in otherwise { n.collectVariables(into: &names) }
        case .loop(_, let iterable, let filter, let body, let otherwise, _):
            iterable.collectVariables(into: &names)
            filter?.collectVariables(into: &names)
            for n in body + otherwise { n.collectVariables(into: &names) }
        case .assign(_, let value, _): value.collectVariables(into: &names)
        case .assignBlock(_, let body, _): for n in body { n.collectVariables(into: &names) }
        }
    }
}

extension JinjaExpression {
    func collectVariables(into names: inout Set<String>) {
        switch self {
        case .literal: return
        case .variable(let name): names.insert(name)
        case .list(let items): for i in items { i.collectVariables(into: &names) }
        case .dictionary(let pairs):
            for p in pairs {
                p.key.collectVariables(into: &names)
                p.value.collectVariables(into: &names)
            }
        case .attribute(let e, _), .not(let e), .unary(_, let e, _): e.collectVariables(into: &names)
        case .subscript(let a, let b), .and(let a, let b), .or(let a, let b), .binary(_, let a, let b, _):
            a.collectVariables(into: &names)
            b.collectVariables(into: &names)
        case .slice(let e, let start, let stop, let step):
            for x in [e, start, stop, step] { x?.collectVariables(into: &names) }
        case .call(let f, let arguments, let keywords, _):
            f.collectVariables(into: &names)
            for a in arguments + keywords.map(\.1) { a.collectVariables(into: &names) }
        case .filter(let e, _, let arguments, let keywords, _):
            for a in [e] + arguments + keywords.map(\.1) { a.collectVariables(into: &names) }
        case .test(let e, _, let arguments, _, _):
            for a in [e] + arguments { a.collectVariables(into: &names) }
        case .compare(let first, let rest, _):
            first.collectVariables(into: &names)
            for r in rest { r.1.collectVariables(into: &names) }
        case .ternary(let then, let condition, let otherwise):
            for x in [then, condition, otherwise] { x?.collectVariables(into: &names) }
        }
    }
}
