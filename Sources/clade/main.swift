print("clade")
