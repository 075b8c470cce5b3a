import Foundation
import Speculation

/// The engine's counters: the per-step report for histograms and the snapshot for /metrics and
/// /health. Engine thread only (the snapshot is published under the lock).
extension Engine {
    /// Hands the step's figures to `onStep`.
    func report(_ step: Step, outcome: StepOutcome, duration: Duration, timing: StepTiming?, draftMs: Double) {
        guard let onStep else { return }
        let treeRows = step.owners.reduce(0) { $0 + ($1.plan?.tree.count ?? 0) }
        let perSequence = step.owners.compactMap { $0.plan.map { $0.tree.count } }
        let plan = speculator?.lastPlan
        onStep(StepReport(duration: duration, predictedMilliseconds: timing?.predictedMs,
                          observedMilliseconds: timing.map { $0.forwardMs + $0.hostMs }, shape: timing?.shape,
                          forwardMilliseconds: timing?.forwardMs, hostMilliseconds: timing?.hostMs, rows: step.rows.count,
                          treeRows: treeRows, acceptedPerSequence: outcome.acceptedPerSequence,
                          plannedGoodput: plan?.goodput, plainGoodput: plan?.plain,
                          treeRowsPerSequence: perSequence, draftMilliseconds: draftMs))
    }

    /// Saves what the drafter learned (the recycle table) where the configuration says.
    func saveDrafterState() {
        guard let path = configuration.drafterStatePath else { return }
        try? speculator?.drafter.saveState(to: path)
    }

    func publish(now: Double, tokens: Int, promptTokens: Int, step: (rows: Int, seconds: Double)?) {
        if tokens > 0 { recent.append((now, tokens)) }
        recent.removeAll { now - $0.time > 5 }
        let window = max(min(now, 5), 1e-3)
        lock.lock()
        snapshotValue.running = running.reduce(0) { $0 + ($1 == nil ? 0 : 1) }
        snapshotValue.waiting = waiting.count + incoming.count
        snapshotValue.completionTokensTotal += tokens
        snapshotValue.promptTokensTotal += promptTokens
        snapshotValue.kvBlocksTotal = cache.blockCount
        snapshotValue.kvBlocksUsed = cache.usedBlocks
        snapshotValue.kvBlocksCached = cache.cachedIdleBlocks
        snapshotValue.prefixLookupTokens = cache.prefixLookupTokens
        snapshotValue.prefixHitTokens = cache.prefixHitTokens
        snapshotValue.preemptions = preemptions
        snapshotValue.draftedTokens = drafted
        snapshotValue.acceptedTokens = accepted
        snapshotValue.speculativeSteps = speculativeSteps
        snapshotValue.forcedDraftedTokens = forcedDrafted
        snapshotValue.forcedAcceptedTokens = forcedAccepted
        snapshotValue.decodeRoots = decodeRoots
        if let speculator {
            snapshotValue.costModel = speculator.cost
            if let plan = speculator.lastPlan {
                snapshotValue.plannedGoodput = plan.goodput
                snapshotValue.plainGoodput = plan.plain
            }
            // The error percentiles sort the recent steps: every 32nd step is fresh enough.
            if speculator.accuracy.count % 32 == 1, let accuracy = speculator.accuracy.summary {
                snapshotValue.costErrorMedian = accuracy.median
                snapshotValue.costErrorP90 = accuracy.p90
            }
            snapshotValue.costErrorSteps = speculator.accuracy.count
            snapshotValue.lastPredictedMilliseconds = speculator.lastStep?.predictedMs
            snapshotValue.lastObservedMilliseconds = speculator.lastStep?.observedMs
            snapshotValue.draftSecondsTotal = speculator.draftSecondsTotal
            snapshotValue.measuredGoodput = speculator.measured
            snapshotValue.drafterLayerCost = speculator.drafter.layerCost
            snapshotValue.drafterSlotsHeld = speculator.drafter.slotsHeld
            // Every step (a few dozen sums): a benchmark reads it after its last request.
            snapshotValue.learnedAcceptanceByDepth = speculator.calibration.acceptanceByDepth(source: DraftSource.learned)
            snapshotValue.learnedExpansionsByDepth = speculator.calibration.expansionsByDepth(source: DraftSource.learned)
        }
        if let step {
            snapshotValue.stepsTotal += 1
            snapshotValue.rowsTotal += step.rows
            snapshotValue.stepSecondsTotal += step.seconds
            snapshotValue.forwardSecondsTotal = forwardSeconds
        }
        snapshotValue.recentTokensPerSecond = Double(recent.reduce(0) { $0 + $1.tokens }) / window
        lock.unlock()
    }
}
