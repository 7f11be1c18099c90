import CladeEngine
import CladeFakeBackend
import CladeModel
import CladeStore
import CladeVMM
import Testing

@Suite struct ErrorCategoryTests {
    @Test func everyCategoryHasItsOwnExitCode() {
        let codes = ErrorCategory.allCases.map(\.exitCode)
        #expect(Set(codes).count == codes.count)
        #expect(!codes.contains(0) && !codes.contains(1), "0 is success and 1 is a command's own failure")
    }

    @Test func errorsOfEveryLayerLandInTheirCategory() {
        let cases: [(any CategorizedError, ErrorCategory, Int)] = [
            (EngineError.badInput("--memory must be between 64 and 65536"), .badInput, 400),
            (ModelError.notFound(kind: "sandbox", name: "x", hint: ""), .notFound, 404),
            (ModelError.alreadyExists(kind: "snapshot", name: "x", hint: ""), .conflict, 409),
            (EngineError.notRunning(id: "x", state: "standby"), .conflict, 409),
            (EngineError.damaged("snapshot 'x' is damaged"), .damaged, 500),
            (EngineError.bootFailed(id: "x", reason: "r", consoleTail: ""), .guestFailure, 502),
            (VMMError.unsupported(backend: "fake", operation: "capture dirty pages"), .unsupported, 501),
            (StoreError.invalidName("../x", reason: "a path"), .badInput, 400),
        ]
        for (error, category, status) in cases {
            #expect(error.category == category, "\(error)")
            #expect(error.category.httpStatus == status, "\(error)")
        }
    }
}
