/// Uploads are written to a staging file beside their target and renamed over it, so a reader
/// never sees half a file. Watchers should see what a user did (a file created or written),
/// not that mechanism: this remembers, per staging file, whether its target existed when the
/// upload began, for the watcher to report the rename as a create and a write, or a write.
enum StagedUploads {
    /// What a staging file's name holds between its target's name and the upload's name.
    static let marker = ".clade-upload-"
    /// Enough for every upload in flight; the oldest are forgotten first (a forgotten one is
    /// reported as a write of an existing file).
    static let capacity = 512

    private static let targets = Guarded<(existed: [String: Bool], order: [String])>(([:], []))

    static func isStaging(_ name: String) -> Bool { name.contains(marker) }

    /// Records, when an upload begins, whether its target existed.
    static func began(staging: String, targetExisted: Bool) {
        targets.withLock { state in
            if state.existed.updateValue(targetExisted, forKey: staging) == nil { state.order.append(staging) }
            if state.order.count > capacity {
                let dropped = state.order.removeFirst()
                state.existed.removeValue(forKey: dropped)
            }
        }
    }

    /// Whether the target of `staging` existed when its upload began (true when unknown).
    static func targetExisted(staging: String) -> Bool {
        targets.withLock { $0.existed[staging] ?? true }
    }
}
