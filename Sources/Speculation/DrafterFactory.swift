import Model

/// The drafters a server or benchmark can configure.
public enum DrafterKind: String, Sendable, CaseIterable {
    /// Prompt lookup only.
    case ngram
    /// The global corpus of earlier requests (suffix drafter), merged with prompt lookup.
    case suffix
    /// The target's own recorded top-k successors, merged with prompt lookup and the corpus of
    /// earlier requests: every train-free source in one tree (the default).
    case recycle
    /// The target with a few middle layers skipped (self-speculation; runs the model to draft).
    case skip
    /// The learned drafter alone (without one: `recycle`). With a learned drafter given,
    /// `recycle`, `suffix` and `ngram` draft merged with it.
    case learned
}

/// Builds the configured drafter for a target and its cache, and keeps what drafters save across
/// restarts: the one place that knows the concrete drafter types.
public enum DrafterFactory {
    /// The drafter of `kind`, and whether it started from saved state (the recycle table is
    /// loaded from `statePath` when a matching file is there). A learned drafter drafts alone
    /// (`.learned`) or after the copy drafters of `recycle`, `suffix` or `ngram`, in one tree.
    /// - Parameters:
    ///   - learned: the learned drafter's weights (nil: none).
    ///   - learnedCost: its layer cost D (nil: measured now).
    ///   - learnedWidth: children the learned drafter adds below each node it expands (1: a chain).
    public static func make(_ kind: DrafterKind, model: Transformer, cache: KVCache, learned weights: LearnedDrafterWeights? = nil,
                            learnedCost: LayerCost? = nil, learnedWidth: Int = 3,
                            statePath: String? = nil) -> (drafter: any Drafter, loadedState: Bool) {
        let vocab = model.config.vocabularySize
        let learned = weights.flatMap { try? LearnedDrafter(weights: $0, slots: cache.slotCount, width: learnedWidth, cost: learnedCost) }
        func withLearned(_ copy: [any Drafter]) -> any Drafter {
            let all = copy + (learned.map { [$0] } ?? [])
            return all.count == 1 ? all[0] : MergedDrafter(all)
        }
        switch kind {
        case .ngram: return (withLearned([NGramDrafter()]), false)
        case .suffix: return (withLearned([NGramDrafter(), SuffixDrafter()]), false)
        case .recycle, .learned:
            if kind == .learned, let learned { return (learned, false) }
            let recycle = RecycleDrafter(vocabularySize: vocab)
            let loaded = statePath.map { recycle.load(from: $0) } ?? false
            return (withLearned([recycle, SuffixDrafter()]), loaded)
        case .skip:
            // The measured default layer set and head shortlist are valid for every model.
            return ((try? SkipDrafter(model: model, cache: cache)) ?? RecycleDrafter(vocabularySize: vocab), false)
        }
    }
}
