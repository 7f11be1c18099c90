import ArgumentParser
import CladeEngine
import CladeModel
import Foundation

struct ImageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "image", abstract: "Build, list and remove images.",
        subcommands: [Build.self, ListImages.self, Remove.self])

    struct Build: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Build a deterministic image from a directory.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Directory whose contents become the root filesystem.") var fromDir: String
        @Option(help: "Image name.") var name: String
        @Option(help: "Free space in the root filesystem, MiB.") var freeSpace = 256
        @Flag(help: "Print the image record as JSON.") var json = false

        func run() async throws {
            let engine = global.makeEngine()
            let progress = ProgressReporter(quiet: json)
            defer { progress.finish() }
            let record = try engine.images.build(
                from: URL(fileURLWithPath: fromDir), name: name, freeMiB: freeSpace, progress: { progress.update($0) })
            progress.finish()
            if json { try printJSON(record) } else { print("\(record.name) \(record.rootfs)") }
        }
    }

    struct ListImages: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List images.")
        @OptionGroup var global: GlobalOptions
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let images = try global.makeEngine().images.list()
            if json { return try printJSON(images) }
            print("NAME".padding(toLength: 20, withPad: " ", startingAt: 0) + "ROOTFS".padding(toLength: 20, withPad: " ", startingAt: 0) + "SIZE      KERNEL")
            for image in images {
                let size = String(format: "%.0fMiB", Double(image.rootfsSize) / 1_048_576)
                print(image.name.padding(toLength: 20, withPad: " ", startingAt: 0)
                    + image.rootfs.short.padding(toLength: 20, withPad: " ", startingAt: 0)
                    + size.padding(toLength: 10, withPad: " ", startingAt: 0) + image.kernelRelease)
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Remove an image's name.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Image name.") var name: String

        func run() async throws {
            try global.makeEngine().images.remove(name)
        }
    }
}
