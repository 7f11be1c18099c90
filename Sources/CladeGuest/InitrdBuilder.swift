import CladeStore
import Foundation
import Logging

/// Builds the initrd: busybox, the init script, the virtio modules, and `clade-agent` with
/// the shared libraries it links. The cpio archive is reproducible: sorted entries, fixed
/// times and owners, so the same inputs give the same digest.
public struct InitrdBuilder: Sendable {
    public let home: CladeHome
    private let logger: Logger

    public init(home: CladeHome, logger: Logger = Logger(label: "clade.initrd")) {
        self.home = home
        self.logger = logger
    }

    /// Builds the archive and stores it as a blob.
    public func build(kernel: GuestKernel, agent: URL, busybox: URL = URL(fileURLWithPath: "/bin/busybox")) throws -> Digest {
        guard try FileSystem.exists(busybox) else { throw GuestError.toolMissing("busybox (apt-get install busybox-static)") }
        let work = try home.makeTemporaryDirectory(prefix: "initrd")
        defer { try? FileSystem.remove(work) }
        let root = work.appendingPathComponent("root")
        let fileManager = FileManager.default
        for directory in ["bin", "proc", "sys", "dev", "newroot", "lib/clade/modules", "clade/lib", "clade/bin"] {
            try fileManager.createDirectory(at: root.appendingPathComponent(directory), withIntermediateDirectories: true)
        }
        try fileManager.copyItem(at: busybox, to: root.appendingPathComponent("bin/busybox"))
        try fileManager.copyItem(at: busybox, to: root.appendingPathComponent("clade/bin/busybox"))
        // Applet links so that images without a shell still get sh, ls, cat ... on PATH (/.clade/bin).
        let applets = try ExternalCommand(busybox.path, ["--list"]).check().stdout.split(separator: "\n")
        for applet in applets where applet != "busybox" && !applet.contains("/") {
            try fileManager.createSymbolicLink(atPath: root.appendingPathComponent("clade/bin/\(applet)").path, withDestinationPath: "busybox")
        }
        for module in GuestKernel.moduleLoadOrder {
            try fileManager.copyItem(
                at: kernel.modules.appendingPathComponent("\(module).ko"),
                to: root.appendingPathComponent("lib/clade/modules/\(module).ko"))
        }
        try fileManager.copyItem(at: agent, to: root.appendingPathComponent("clade/clade-agent"))
        for library in try sharedLibraries(of: agent) {
            let destination = root.appendingPathComponent("clade/lib/\(library.lastPathComponent)")
            if try !FileSystem.exists(destination) {
                try fileManager.copyItem(at: library.resolvingSymlinksInPath(), to: destination)
            }
        }
        let initURL = root.appendingPathComponent("init")
        try Data(InitScript.render(modules: GuestKernel.moduleLoadOrder).utf8).write(to: initURL)
        guard chmod(initURL.path, 0o755) == 0 else { throw StoreError.systemCall("chmod", path: initURL.path, errno: errno) }

        try ExternalCommand("find", [root.path, "-exec", "touch", "-h", "-d", "@0", "{}", "+"]).check()
        let listing = try ExternalCommand("find", [".", "-mindepth", "1"], currentDirectory: root).check().stdout
        let entries = listing.split(separator: "\n").map(String.init).sorted().joined(separator: "\n") + "\n"
        let archive = work.appendingPathComponent("initrd.cpio")
        guard ExternalCommand.locate("cpio") != nil else { throw GuestError.toolMissing("cpio") }
        let output = try ExternalCommand(
            "sh", ["-c", "cpio --quiet --reproducible -o -H newc -R 0:0 > \"$1\"", "sh", archive.path],
            currentDirectory: root
        ).check(stdin: Data(entries.utf8))
        _ = output
        let (digest, size) = try BlobStore(home: home).ingest(archive)
        logger.info("built initrd", metadata: ["digest": "\(digest)", "bytes": "\(size)"])
        return digest
    }

    /// The libraries `ldd` resolves for `binary`, including the dynamic loader.
    func sharedLibraries(of binary: URL) throws -> [URL] {
        let output = try ExternalCommand("ldd", [binary.path]).run()
        if output.stdout.contains("not a dynamic executable") || output.stderr.contains("not a dynamic executable") { return [] }
        guard output.status == 0 else {
            throw StoreError.commandFailed(command: "ldd \(binary.path)", status: output.status, output: output.stderr)
        }
        var libraries: [URL] = []
        for line in output.stdout.split(separator: "\n") {
            let fields = line.split(whereSeparator: \.isWhitespace)
            if let arrow = fields.firstIndex(of: "=>"), arrow + 1 < fields.count, fields[arrow + 1].hasPrefix("/") {
                libraries.append(URL(fileURLWithPath: String(fields[arrow + 1])))
            } else if let first = fields.first, first.hasPrefix("/") {
                libraries.append(URL(fileURLWithPath: String(first)))
            }
        }
        // The init script execs the loader by this exact name.
        if !libraries.contains(where: { $0.lastPathComponent == "ld-linux-x86-64.so.2" }) {
            throw GuestError.agent("\(binary.path) does not use /lib64/ld-linux-x86-64.so.2; build clade-agent for x86_64 glibc")
        }
        return libraries
    }
}
