// swift-tools-version:6.0
import PackageDescription

// Layers (see docs/ARCHITECTURE.md): Store → Model → VMM → backends (QEMU) → Guest → Pack → Engine
// → Bench, Server, Shim → CLI.
// A module depends only on modules earlier in that list. `CladeGuestProtocol`
// belongs to the Guest layer; it is split out so that the in-guest agent can link
// it without pulling in any host-side code.
// Test code is compiled without optimisation even in the release build that the tests share with
// clade (scripts/build.sh --tests): optimising the ~5,000 lines of integration tests alone took
// ~200 s of a clean CI build on 2 cores, and -Onone ~40 s; the code under test stays optimised.
let testCode: [SwiftSetting] = [.unsafeFlags(["-Onone"])]

let package = Package(
    name: "clade",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "clade", targets: ["clade"]),
        .executable(name: "clade-agent", targets: ["clade-agent"]),
        .executable(name: "containerd-shim-clade-v2", targets: ["containerd-shim-clade-v2"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.24.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.24.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.27.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.28.0"),
    ],
    targets: [
        .target(name: "CLinuxShims"),
        .systemLibrary(name: "CLibCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .target(
            name: "CladeStore",
            dependencies: [
                "CLinuxShims",
                "CLibCrypto",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "CladeModel",
            dependencies: [
                "CladeStore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "CladeVMM",
            dependencies: [
                "CLinuxShims",
                "CladeStore",
                "CladeModel",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
            ]
        ),
        .target(
            name: "CladeQEMU",
            dependencies: [
                "CladeStore",
                "CladeVMM",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .target(name: "CladeGuestProtocol"),
        .target(
            name: "CladeGuest",
            dependencies: [
                "CArchive",
                "CladeArchive",
                "CladeStore",
                "CladeModel",
                "CladeVMM",
                "CladeGuestProtocol",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        // The lazy-memory FUSE server's request loop, on libfuse3's low-level API (C, because
        // the loop's entry points are macros Swift cannot call).
        .target(name: "CLazyFuse", dependencies: ["CFuse"]),
        // The Store layer's tar reader: one libarchive setup for image layers and packs.
        .target(name: "CladeArchive", dependencies: ["CArchive"]),
        .target(
            name: "CladePack",
            dependencies: [
                "CladeArchive",
                "CladeStore",
                "CladeModel",
                "CladeVMM",
                "CZstd",
                "CArchive",
                "CLazyFuse",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .target(
            name: "CladeEngine",
            dependencies: [
                "CladeStore",
                "CladeModel",
                "CladeVMM",
                "CladeQEMU",
                "CladeGuest",
                "CladeGuestProtocol",
                "CladePack",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "CladeBench",
            dependencies: [
                "CladeEngine",
                "CladeQEMU",
                "CladeVMM",
                "CladeGuest",
                "CladePack",
                "CladeModel",
                "CladeStore",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "CladeServer",
            dependencies: [
                "CladeEngine",
                "CladeGuest",
                "CZlib",
                "CLibCrypto",
                "CladePack",
                "CladeModel",
                "CladeStore",
                "CladeGuestProtocol",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // The API's one description, compiled into the binary (nothing to install beside it).
            resources: [.embedInCode("Resources/openapi.json")]
        ),
        .executableTarget(
            name: "clade",
            dependencies: [
                "CLinuxShims",
                "CladeServer",
                "CladeBench",
                "CladeGuestProtocol",
                "CladeEngine",
                "CladePack",
                "CladeGuest",
                "CladeVMM",
                "CladeModel",
                "CladeStore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // containerd's shim v2: ttrpc, the Task service on the engine, and the messages
        // generated once from containerd's .proto files (scripts/generate-shim-protos.sh).
        .target(
            name: "CladeShim",
            dependencies: [
                "CladeEngine",
                "CladeGuest",
                "CladeGuestProtocol",
                "CladeModel",
                "CladeStore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            exclude: ["Protos"]
        ),
        .executableTarget(
            name: "containerd-shim-clade-v2",
            dependencies: ["CladeShim", "CladeEngine", "CLinuxShims", .product(name: "Logging", package: "swift-log")]
        ),
        .executableTarget(
            name: "clade-agent",
            dependencies: ["CladeGuestProtocol", "CLinuxShims"]
        ),
        .testTarget(name: "CladeStoreTests", dependencies: ["CladeStore"], swiftSettings: testCode),
        .testTarget(
            name: "CladeModelTests",
            dependencies: ["CladeModel", "CladeStore", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: testCode
        ),
        .testTarget(name: "CladeQEMUTests", dependencies: ["CladeQEMU", "CladeVMM"], swiftSettings: testCode),
        // The in-memory backend the engine and server tests run on: a first-class stand-in for
        // a hypervisor, kept with the tests.
        .target(
            name: "CladeFakeBackend",
            dependencies: ["CladeEngine", "CladeVMM", "CladeModel", "CladeStore", "CladeGuestProtocol"],
            path: "Tests/CladeFakeBackend",
            swiftSettings: testCode
        ),
        .testTarget(
            name: "CladeEngineTests",
            dependencies: [
                "CladeEngine", "CladeFakeBackend", "CladeVMM", "CladeModel", "CladeStore", "CladeGuestProtocol", "CladeGuest",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: testCode
        ),
        .testTarget(name: "CladeGuestTests", dependencies: ["CladeGuest", "CladeGuestProtocol"], swiftSettings: testCode),
        .testTarget(
            name: "CladeShimTests",
            dependencies: [
                "CladeShim", "CladeStore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: testCode
        ),
        .testTarget(name: "CladePackTests", dependencies: ["CladePack", "CladeModel", "CladeStore", "CladeQEMU"], swiftSettings: testCode),
        .testTarget(
            name: "CladeServerTests",
            dependencies: [
                "CladeServer", "CladeEngine", "CladeStore", "CladeGuestProtocol", "CladeFakeBackend", "CladeModel",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: testCode
        ),
        // The CLI's own tests (its README reference). Depending on the two executables also
        // builds them, and ArgumentParser, in the test build's one graph, where they fill cores
        // the long chain of library modules leaves idle (scripts/build.sh then only copies).
        .testTarget(
            name: "CladeCLITests",
            dependencies: ["clade", "containerd-shim-clade-v2", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: testCode
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "CladeEngine",
                "CladeBench", "CladePack", "CladeGuest", "CladeGuestProtocol", "CladeModel", "CladeStore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: testCode
        ),
    ],
    swiftLanguageModes: [.v6]
)
