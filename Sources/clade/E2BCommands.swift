import ArgumentParser
import CladeServer
import Foundation
import Logging

/// `clade e2b ...`: what serving E2B's API needs beside `clade serve --e2b-listen`.
struct E2BCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "e2b", abstract: "Prepare E2B templates and keys for `clade serve --e2b-listen`.", subcommands: [E2BInit.self])
}

struct E2BInit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Build and bake an E2B template (default: base, Debian with user and passwordless sudo, python, pip, curl and git), and print the API key file.",
        discussion: """
            Templates are baked on first use anyway; running this first keeps the first Sandbox.create fast. \
            A template id names a snapshot; an image of that name is baked into one; `base` is built if missing; \
            `httpbin` is `base` with an HTTP echo server running on port 8080 (the sidecar E2B's SDK tests name).
            """)
    @OptionGroup var global: GlobalOptions
    @Option(help: "The template to prepare.") var template: String = E2BTemplates.baseName
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let engine = await global.makeEngine()
        let progress = ProgressReporter(quiet: json)
        let tag = try await E2BTemplates(engine: engine, logger: Logger(label: "clade.e2b")).snapshotTag(for: template) { progress.update($0) }
        progress.finish()
        let keyFile = try E2BConfiguration.defaultKeyFile(home: engine.home)
        if json { return try printJSON(["template": tag, "api_key_file": keyFile.path]) }
        print("template \(tag) is ready")
        print("API keys: \(keyFile.path)  (export E2B_API_KEY=$(head -n1 \(keyFile.path)))")
    }
}
