import ArgumentParser
import CladeEngine
import CladeModel
import CladePack
import CladeStore
import Foundation

struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image", abstract: "Pull, import, build, list, inspect and remove images.",
        subcommands: [Pull.self, Import.self, Build.self, ListImages.self, Inspect.self, Remove.self])

    /// Options shared by every way of making an image from layers.
    struct IngestOptions: ParsableArguments {
        @Option(help: "Image name (default: derived from the reference or file name).") var name: String?
        @Option(help: "Platform to pick from a multi-platform image, OS/ARCH[/VARIANT].") var platform: String?
        @Option(help: "Free space in the root filesystem beyond its content, MiB.") var freeSpace = 256
        @Option(help: "Refuse images whose layers unpack to more than this, MiB.") var sizeLimit = 32768

        func options() throws -> ImageIngestOptions {
            ImageIngestOptions(
                name: name, platform: try platform.map(ImagePlatform.init(parsing:)) ?? .host, freeMiB: freeSpace, sizeLimitMiB: sizeLimit)
        }
    }

    struct Pull: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pull",
            abstract: "Pull a container image (OCI or Docker) from a registry and make it a clade image.",
            discussion: "REF is read as docker does: python:3.12-slim is docker.io/library/python:3.12-slim; localhost:5000/app:v1 names a registry.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var registry: RegistryOptions
        @OptionGroup var ingest: IngestOptions
        @Flag(help: "Print the image record as JSON.") var json = false
        @Argument(help: "Image reference, [HOST[:PORT]/]REPOSITORY[:TAG|@sha256:DIGEST].") var reference: String

        func run() async throws {
            let progress = ProgressReporter(quiet: json)
            let access = RegistryAccess(insecure: registry.insecure, credentials: try registry.credentials())
            let record = try await global.makeEngine().images.pull(reference, options: try ingest.options(), access: access) { step, done, total in
                progress.update(step, done: done, total: total)
            }
            progress.finish()
            try printImage(record, json: json)
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import",
            abstract: "Import an image from an OCI layout directory, a docker save archive, or a rootfs tarball.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var ingest: IngestOptions
        @Flag(help: "Print the image record as JSON.") var json = false
        @Argument(help: "DIR[:TAG] (OCI image layout), FILE[:TAG] (docker save), or a .tar/.tar.gz/.tar.zst root filesystem.") var path: String

        func run() async throws {
            let progress = ProgressReporter(quiet: json)
            let record = try await global.makeEngine().images.importImage(path, options: try ingest.options()) { step, done, total in
                progress.update(step, done: done, total: total)
            }
            progress.finish()
            try printImage(record, json: json)
        }
    }

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Show an image's record and config (JSON).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Image name.") var name: String

        func run() async throws {
            try printJSON(try await global.makeEngine().images.named(name))
        }
    }

    struct Build: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "build",
            abstract: "Build a deterministic image from a directory (--from-dir) or a Debian suite (--debian, through mmdebstrap).",
            discussion: """
                --debian SUITE installs a minimal Debian from the host's configured Debian mirror (or --mirror) with --packages, \
                and adds the account 'user' (uid 1000, /home/user, bash) that commands run as by default, in /home/user.
                """)
        @OptionGroup var global: GlobalOptions
        @Option(help: "Directory whose contents become the root filesystem.") var fromDir: String?
        @Option(help: "Debian suite to install with mmdebstrap, e.g. bookworm.") var debian: String?
        @Option(help: "With --debian: packages to install, comma-separated.") var packages: String = ""
        @Option(help: "With --debian: the Debian mirror (default: the host's configured one).") var mirror: String?
        @Option(help: "Image name.") var name: String
        @Option(help: "Free space in the root filesystem, MiB.") var freeSpace = 256
        @Flag(help: "Print the image record as JSON.") var json = false

        func validate() throws {
            guard (fromDir == nil) != (debian == nil) else { throw ValidationError("give exactly one of --from-dir DIR and --debian SUITE") }
        }

        func run() async throws {
            let engine = await global.makeEngine()
            let progress = ProgressReporter(quiet: json)
            defer { progress.finish() }
            let record: ImageRecord
            if let debian {
                let list = packages.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
                record = try await engine.images.buildDebian(
                    suite: debian, packages: list, mirror: mirror, options: ImageIngestOptions(name: name, freeMiB: freeSpace)
                ) { step, done, total in progress.update(step, done: done, total: total) }
            } else {
                record = try engine.images.build(
                    from: URL(fileURLWithPath: fromDir ?? "."), name: name, freeMiB: freeSpace, progress: { progress.update($0) })
            }
            progress.finish()
            try printImage(record, json: json)
        }
    }

    struct ListImages: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List images.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let images = try await global.makeEngine().images.list()
            if json { return try printJSON(images) }
            func column(_ text: String, _ width: Int) -> String { text.padding(toLength: max(width, text.count + 1), withPad: " ", startingAt: 0) }
            print(column("NAME", 24) + column("ROOTFS", 20) + column("SIZE", 10) + "SOURCE")
            for image in images {
                let size = String(format: "%.0fMiB", Double(image.rootfsSize) / 1_048_576)
                print(column(image.name, 24) + column(image.rootfs.short, 20) + column(size, 10) + (image.source ?? "-"))
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove an image's name.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Image name.") var name: String

        func run() async throws {
            let engine = await global.makeEngine()
            let removed = try engine.images.list().first { $0.name == name }
            try engine.images.remove(name)
            reportReclaimable(engine, of: Set(removed.map { [$0.rootfs, $0.initrd, $0.kernel] + $0.layers + ($0.configBlob.map { [$0] } ?? []) } ?? []))
        }
    }
}

/// An image just made: its record as JSON, or name, rootfs digest and source.
func printImage(_ record: ImageRecord, json: Bool) throws {
    if json { return try printJSON(record) }
    print("\(record.name) \(record.rootfs)" + (record.source.map { " (from \($0))" } ?? ""))
}
