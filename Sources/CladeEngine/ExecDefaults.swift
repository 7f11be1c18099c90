import CladeModel

/// The image config's part in an exec: its environment under the request's, its working
/// directory and user unless the request names others.
struct ExecDefaults {
    let config: ImageConfig?

    init(_ config: ImageConfig?) { self.config = config }

    func apply(env: [String: String]?, cwd: String?, user: String?) -> (env: [String: String]?, cwd: String?, user: String?) {
        guard let config else { return (env, cwd, user) }
        var merged = config.environment
        merged.merge(env ?? [:]) { _, request in request }
        return (merged.isEmpty ? nil : merged, cwd ?? config.workingDir, user ?? config.user)
    }
}
